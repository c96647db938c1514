"""Host side: each session's memory and disk, summed over the session and held to its budget (no cgroups needed).

An rlimit bounds one process: three processes of one session held 2 GiB each, and a memory-backed ``/tmp`` or
``/dev/shm`` (tmpfs) pins memory no limit sees (today every tier puts them on disk, in the session's scratch
directory, so they count as its disk). One thread watches every session:

- **Memory**, every :data:`MEMORY_INTERVAL` seconds: the resident size of the session's processes from
  ``/proc/<pid>/statm`` (cheap), plus the bytes held in its memory-backed directories, if it has any (``statvfs``
  of its tmpfs mounts, reached from the host through ``/proc/<worker>/root/...``). Resident sizes count a page once per process
  sharing it (a forked worker shares most of the template's), so when their sum passes the budget the proportional
  set size (``/proc/<pid>/smaps_rollup``, a page split between its sharers) decides. Over the budget the session's
  largest process is ended, as the kernel's OOM killer would (the worker itself when it is the largest, which loses
  the session as an OOM would), and ``on_exceeded`` gets one line the host can append to the running cell's stderr.
- **Disk**, every :data:`DISK_INTERVAL` seconds for sessions that run code or have processes besides the worker
  (and at the first tick they do), every :data:`IDLE_DISK_INTERVAL` seconds for the others: the blocks the session's files hold (``st_blocks``, each
  inode once: a sparse file counts what it holds, a hard link does not count twice) in its directories. Over the
  budget the session's processes other than the worker are ended and ``on_exceeded`` tells the host to interrupt the
  running cell; :meth:`Watchdog.usage` says ``disk_over`` until files are deleted, and the host refuses uploads
  meanwhile.
- **Tasks** (processes and threads), every tick, from the same census: past the budget the session's processes other
  than the worker are ended (or the worker itself, when its own threads are past it, which loses the session) and
  ``on_exceeded`` says so (the host interrupts the running cell). A process already sent SIGKILL is not signalled or
  reported again while the kernel takes it apart, which for thousands of forks of one large process takes seconds.
  Between ticks the machine's task count is watched (:data:`SENTINEL_INTERVAL`): a jump brings the next tick
  forward. This changes no system call's behaviour, unlike a cap answered through seccomp user notification
  (``supervisor.py``), whose callers can see EINTR from ``fork``; a fork bomb runs for at most a tick past the budget
  (ticks come every :data:`CHASE_INTERVAL` seconds while a session is past it, at once on a jump of the task count),
  bounded meanwhile by the workers' uid-wide ``RLIMIT_NPROC`` ceiling (set well above the sum of the sessions'
  budgets, below the template's own limit).
- **CPU**: on ``watch`` the session's scheduling group (its autogroup, where the kernel has them on) gets the
  budget's nice value, retried until the kernel's rate limit lets it through.

A session's processes are those of its session id (the worker's pid: the seccomp policy refuses ``setsid``), found
by a census of ``/proc`` every tick (``census.py``: a listing, and the stat file of new processes only: well under a
millisecond), so a process started while the session looks idle (by a background thread) is seen at once too. Or
the host passes a callable that lists them.

On the host, ``guards.py`` watches each worker once it is ready (``watch(guid, worker_pid=pid, dirs=[data_dir,
scratch_dir], budget=..., on_exceeded=worker's handler, busy=lambda: a cell runs)``) and unwatches it when it is
killed; ``usage(key)`` serves the emulator's ``usage()``, ``measure_now(key)`` an upload's check. ``memory_dirs``
counts memory-backed mounts a session writes to, for a tier that gives it one. ``on_exceeded`` runs on the
watchdog's thread: it should only note the event and schedule the interrupt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .budgets import MIB, SessionBudget
from .census import Census
from .inside import strays

log = logging.getLogger("azure_sessions.emulator")

MEMORY_INTERVAL = 0.25
CHASE_INTERVAL = 0.02
"""The tick's interval while a session was past its task budget at the last tick: a fork bomb regrows fast."""
SENTINEL_INTERVAL, SENTINEL_JUMP = 0.02, 48
"""Between ticks, while a session runs code or has processes, the machine's task count (``/proc/loadavg``, one
small read) is looked at this often; grown by this many tasks since the last tick, the next tick comes at once. A
fork bomb is then seen when it is tens of processes past its budget, not the thousands a quarter second makes."""
_LOADAVG = "/proc/loadavg"
DISK_INTERVAL = 1.5
IDLE_DISK_INTERVAL = 10.0
PROPORTIONAL_INTERVAL = 1.0
"""Proportional sizes are read again at most this often, unless the resident sizes' growth may have passed the budget."""
PROPORTIONAL_READ_BUDGET = 0.05
"""Seconds of one tick spent reading proportional sizes (``smaps_rollup`` walks a process's page tables and waits
for a forking process's memory map): past it the next tick goes on where this one stopped, and the verdict waits."""
ENDING_GRACE = 5.0
"""A process ended for memory frees it as it goes; no other is ended for this long unless it has gone."""
_PAGE = os.sysconf("SC_PAGE_SIZE")
_AUTOGROUP_ENABLED = "/proc/sys/kernel/sched_autogroup_enabled"


@dataclass(frozen=True)
class Exceeded:
    """A session went over a budget and the watchdog acted; ``message`` is one line for the session's user."""

    key: object
    kind: str  # "memory", "disk" or "tasks"
    message: str
    ended: tuple[int, ...] = ()  # the pids of the processes ended (tasks: and of those that wait to be reaped)
    worker_ended: bool = False  # the session's worker was among them: the session is lost
    news: bool = True  # False: only processes ended earlier that now wait to be reaped (nothing newly ended)


@dataclass(frozen=True)
class Usage:
    """What a session held at the last measurement."""

    memory_bytes: int  # its processes (proportional where it mattered) plus its memory-backed directories
    memory_dirs_bytes: int  # of which in memory-backed directories (tmpfs)
    disk_bytes: int  # blocks its files hold in its directories
    processes: int
    memory_over: bool
    disk_over: bool
    measured_at: float  # time.monotonic() of the last memory measurement
    tasks: int = 0  # processes and threads (zombies included), at the last measurement


@dataclass(eq=False)
class _Watched:
    key: object
    worker_pid: int
    session: int | Callable[[], Iterable[int]]
    dirs: tuple[str, ...]
    memory_dirs: tuple[str, ...]
    budget: SessionBudget
    on_exceeded: Callable[[Exceeded], None]
    busy: Callable[[], bool]
    pids: tuple[int, ...] = ()
    memory: int = 0
    memory_dirs_bytes: int = 0
    disk: int = -1
    disk_over: bool = False
    disk_reported: int = 0  # usage when the last disk event was sent
    zombies_reported: frozenset[int] = frozenset()  # ended processes of the session already reported to be reaped
    killed: dict[int, int] = field(default_factory=dict)  # pid -> start time of a process sent SIGKILL for its tasks
    memory_over: bool = False
    tasks: int = 0
    measured_at: float = 0.0
    next_disk: float = 0.0
    active: bool = False  # running code, or processes besides the worker, at the last tick
    nice_pending: bool = True
    ending: dict[int, int] = field(default_factory=dict)  # pid -> pidfd of a process ended for memory, until gone
    ending_since: float = 0.0
    proportional: tuple[float, int, int] = (-1.0, 0, 0)  # when, their sum, the resident sizes' sum then
    reading: dict[int, int] = field(default_factory=dict)  # proportional sizes read so far in an unfinished round


class Watchdog:
    """Measures every watched session from one thread (started on the first ``watch``) and acts on its budgets."""

    def __init__(self, memory_interval: float = MEMORY_INTERVAL, disk_interval: float = DISK_INTERVAL) -> None:
        self.memory_interval = memory_interval
        self.disk_interval = disk_interval
        self._lock = threading.Lock()
        self._sessions: dict[object, _Watched] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._autogroups = _autogroups_enabled()
        self._census = Census()  # used by the thread only
        self.ticks = 0
        self._chasing = False  # a session was past its task budget at the last tick
        self.cpu_seconds = 0.0  # the watchdog thread's CPU time, in all (benchmarks)
        self.scans = 0
        self.sentinel_ticks = 0  # ticks brought forward by the machine's task count (``SENTINEL_JUMP``)
        self._any_active = False  # a session ran code or had processes besides its worker at the last tick

    def watch(
        self,
        key: object,
        *,
        worker_pid: int,
        session: int | Callable[[], Iterable[int]] | None = None,
        dirs: Iterable[str | os.PathLike] = (),
        memory_dirs: Iterable[str | os.PathLike] = (),
        budget: SessionBudget | None = None,
        on_exceeded: Callable[[Exceeded], None] = lambda event: None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """Watch the session ``key`` whose worker is ``worker_pid``. ``session``: its session id (default: the
        worker's pid), or a callable listing its pids. ``dirs``: where its files live (disk); ``memory_dirs``:
        memory-backed mounts it writes to (tmpfs, counted as memory). ``busy``: whether it is running code now."""
        watched = _Watched(key, worker_pid, worker_pid if session is None else session,
                           tuple(map(os.fspath, dirs)), tuple(map(os.fspath, memory_dirs)), budget or SessionBudget(),
                           on_exceeded, busy, pids=(worker_pid,))  # fmt: skip
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("the watchdog is closed")
            self._sessions[key] = watched
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emulator-watchdog", daemon=True)
                self._thread.start()

    def unwatch(self, key: object) -> None:
        with self._lock:
            watched = self._sessions.pop(key, None)
        if watched is not None:
            _close_all(watched.ending)

    def usage(self, key: object) -> Usage | None:
        """What the session held at the last measurement (None: not watched)."""
        watched = self._sessions.get(key)
        if watched is None:
            return None
        return Usage(watched.memory, watched.memory_dirs_bytes, max(watched.disk, 0), len(watched.pids),
                     watched.memory_over, watched.disk_over, watched.measured_at, watched.tasks)  # fmt: skip

    def measure_now(self, key: object) -> Usage | None:
        """Measure ``key``'s disk at once (before accepting an upload), then its usage."""
        watched = self._sessions.get(key)
        if watched is not None:
            watched.next_disk = 0.0
            self._check_disk(watched, time.monotonic(), act=False)
        return self.usage(key)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for watched in sessions:
            _close_all(watched.ending)

    # -- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            cpu = time.thread_time()
            try:
                self.tick(started)
            except Exception:
                log.exception("the session watchdog's tick failed")
            tasks_then = _machine_tasks()
            interval = CHASE_INTERVAL if self._chasing else self.memory_interval
            deadline = started + interval
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if not self._any_active or tasks_then is None:
                    self._stop.wait(left)
                    break
                self._stop.wait(min(left, SENTINEL_INTERVAL))
                if (now := _machine_tasks()) is not None and now - tasks_then >= SENTINEL_JUMP:
                    self.sentinel_ticks += 1
                    break
            self.cpu_seconds += time.thread_time() - cpu  # (the sentinel's reads included; waiting costs none)

    def tick(self, now: float) -> None:
        """One round: every session's memory; the disk of those due."""
        with self._lock:
            sessions = list(self._sessions.values())
        self.ticks += 1
        by_session = [w for w in sessions if not callable(w.session)]
        if by_session:
            members = self._census.members({w.session for w in by_session})  # type: ignore[misc]
            self.scans += 1
            for watched in by_session:
                watched.pids = tuple(members.get(watched.session, ()))  # type: ignore[arg-type]
        chasing = False
        for watched in sessions:
            if callable(watched.session):
                watched.pids = tuple(_safe(watched.session, ()))
            if watched.nice_pending:
                watched.nice_pending = self._autogroups and not _set_autogroup_nice(watched)
            ended = self._check_tasks(watched)
            # Past its task budget the session's processes are being ended: memory waits (what was ended frees its
            # memory as it goes, and reading thousands of forks' sizes would hold every other session's tick).
            if watched.worker_pid not in ended and not _over_tasks(watched):
                self._check_memory(watched, now, [pid for pid in watched.pids if pid not in ended])
            chasing = chasing or bool(ended)
        self._chasing = chasing
        for watched in sessions:  # due, or at once when it starts running code (its next check was an idle one's)
            was_active, watched.active = watched.active, _active(watched)
            if now >= watched.next_disk or (watched.active and not was_active):
                self._check_disk(watched, now, act=True)
        self._any_active = any(watched.active for watched in sessions)

    # -- tasks --------------------------------------------------------------------------------------------------
    def _check_tasks(self, watched: _Watched) -> set[int]:
        """Past the budget, end the session's processes (the worker's alone when its own threads pass it); returns
        the pids ended now."""
        counts = {pid: _tasks(pid) for pid in watched.pids}
        watched.tasks = sum(counts.values())
        if not _over_tasks(watched):
            return set()
        cap = watched.budget.tasks
        worker_over = counts.get(watched.worker_pid, 0) > cap
        targets = [watched.worker_pid] if worker_over else [p for p in watched.pids if p != watched.worker_pid]
        ended = []
        # A process sent SIGKILL may take seconds to go (thousands of forks of one large process leave the kernel
        # much to undo, one at a time): it is not signalled or reported again meanwhile.
        watched.killed = {pid: start for pid, start in watched.killed.items() if pid in counts}
        for pid in targets:
            if (member := _open_member(pid, watched)) is None:
                continue
            pidfd, start = member
            if watched.killed.get(pid) != start:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    ended.append(pid)
                    watched.killed[pid] = start
            os.close(pidfd)
        # Ended but not reaped, a process still holds a task (of the uid's RLIMIT_NPROC too): reported once, so the
        # host has its parent (the worker, their subreaper) collect it.
        zombies = (
            frozenset() if worker_over else frozenset(p for p in set(targets) - set(ended) if _unreaped(p, watched))
        )
        new_zombies, watched.zombies_reported = zombies - watched.zombies_reported, zombies
        if not ended and not new_zombies:
            return set()
        what = "its worker process was ended, so the session's variables were lost" if worker_over else (
            f"its {len(ended) + len(zombies)} processes other than the worker were ended")  # fmt: skip
        message = f"the session ran more than {cap} processes and threads ({watched.tasks}); {what}"
        self._report(watched, Exceeded(watched.key, "tasks", message, tuple(ended) + tuple(sorted(zombies)),
                                       worker_over, news=bool(ended)))  # fmt: skip
        return set(ended)

    # -- memory -------------------------------------------------------------------------------------------------
    def _check_memory(self, watched: _Watched, now: float, pids: list[int]) -> None:
        for pid, pidfd in list(watched.ending.items()):  # a process ended for memory frees it when it is gone
            if _has_ended(pidfd) or now - watched.ending_since > ENDING_GRACE:
                os.close(watched.ending.pop(pid))
        resident = {pid: _resident(pid) for pid in pids}
        in_dirs = sum(_used_bytes(path) for path in watched.memory_dirs)
        resident_sum = sum(resident.values())
        total = resident_sum + in_dirs
        budget = watched.budget.memory_bytes
        sizes = resident
        # resident sizes count shared pages once per sharer: the proportional sizes decide
        if budget is not None and total > budget:
            when, proportional_sum, resident_then = watched.proportional
            estimate = proportional_sum + max(0, resident_sum - resident_then) + in_dirs
            if now - when < PROPORTIONAL_INTERVAL and estimate <= budget:
                total = estimate  # read a moment ago, and the growth since cannot have passed the budget
            else:
                read = _proportional_sizes(watched, resident)
                if read is None:
                    return  # unfinished: the next tick reads on, and the last measurement stands meanwhile
                sizes = read
                watched.proportional = (now, sum(sizes.values()), resident_sum)
                total = sum(sizes.values()) + in_dirs
        watched.memory, watched.memory_dirs_bytes, watched.measured_at = total, in_dirs, now
        watched.memory_over = budget is not None and total > budget
        if watched.memory_over and not watched.ending:
            self._end_largest(watched, sizes, now)

    def _end_largest(self, watched: _Watched, sizes: dict[int, int], now: float) -> None:
        for pid in sorted(sizes, key=sizes.get, reverse=True):
            if (member := _open_member(pid, watched)) is None:
                continue
            pidfd = member[0]
            command = _command(pid) or "?"
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            watched.ending[pid], watched.ending_since = pidfd, now
            watched.proportional = (-1.0, 0, 0)
            is_worker = pid == watched.worker_pid
            what = "its worker process" if is_worker else f"process {pid} ({command})"
            message = f"the session used more than {watched.budget.memory_mb} MiB of memory; {what} was ended"
            if is_worker:
                message += ", so the session's variables were lost"
            self._report(watched, Exceeded(watched.key, "memory", message, (pid,), is_worker))
            return

    # -- disk ---------------------------------------------------------------------------------------------------
    def _check_disk(self, watched: _Watched, now: float, act: bool) -> None:
        watched.next_disk = now + (self.disk_interval if _active(watched) else IDLE_DISK_INTERVAL)
        watched.disk = allocated_bytes(watched.dirs)
        budget = watched.budget.disk_bytes
        if budget is None or watched.disk <= budget:
            watched.disk_over, watched.disk_reported = False, 0
            return
        first = not watched.disk_over
        watched.disk_over = True
        if not act or (not first and watched.disk <= watched.disk_reported):
            return  # over, but nothing written since the last report
        watched.disk_reported = watched.disk
        ended = []
        for pid in watched.pids:
            if pid != watched.worker_pid and (member := _open_member(pid, watched)) is not None:
                pidfd = member[0]
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    ended.append(pid)
                os.close(pidfd)
        message = (f"the session's files took more than {watched.budget.disk_mb} MiB of disk "
                   f"({watched.disk // MIB} MiB); the writing was interrupted: delete files to write again")  # fmt: skip
        self._report(watched, Exceeded(watched.key, "disk", message, tuple(ended)))

    def _report(self, watched: _Watched, event: Exceeded) -> None:
        log.log(logging.WARNING if event.news else logging.DEBUG, "session %s: %s", watched.worker_pid, event.message)
        try:
            watched.on_exceeded(event)
        except Exception:
            log.exception("the host's handler of an exceeded budget failed")


def allocated_bytes(paths: Iterable[str]) -> int:
    """Bytes the files below ``paths`` hold on disk (``st_blocks``; each inode once; links not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = list(paths)
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        if stat_module.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError), os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    with contextlib.suppress(OSError):
                        est = entry.stat(follow_symlinks=False)
                        if (est.st_dev, est.st_ino) not in seen:
                            seen.add((est.st_dev, est.st_ino))
                            total += est.st_blocks * 512
    return total


def _machine_tasks() -> int | None:
    """Every task of the machine (its PID namespace's view), from /proc/loadavg ("0.5 0.4 0.3 2/1234 5678")."""
    try:
        with open(_LOADAVG, "rb") as fh:
            return int(fh.read().split()[3].split(b"/")[1])
    except (OSError, IndexError, ValueError):
        return None


def _tasks(pid: int) -> int:
    try:
        return max(len(os.listdir(f"/proc/{pid}/task")), 1)
    except OSError:
        return 0  # ended since the census


def _resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _over_tasks(watched: _Watched) -> bool:
    return watched.budget.tasks is not None and watched.tasks > watched.budget.tasks


def _proportional_sizes(watched: _Watched, resident: dict[int, int]) -> dict[int, int] | None:
    """The proportional size of each of ``resident``'s processes, read in rounds of at most
    :data:`PROPORTIONAL_READ_BUDGET` seconds; None until the round has read them all."""
    deadline = time.monotonic() + PROPORTIONAL_READ_BUDGET
    read = {pid: size for pid, size in watched.reading.items() if pid in resident}
    for pid in resident:
        if pid not in read:
            if time.monotonic() > deadline:
                watched.reading = read
                return None
            read[pid] = _proportional(pid, resident[pid])
    watched.reading = {}
    return read


def _proportional(pid: int, fallback: int) -> int:
    """The process's proportional set size; its resident size when that cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return fallback


def _used_bytes(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _open_member(pid: int, watched: _Watched) -> tuple[int, int] | None:
    """A pidfd of ``pid`` and its start time if it still is a live process of the session (never a reused pid),
    else None."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    st = strays.read_stat(pid)  # read after the pidfd: a pid reused before it fails this check
    member = st is not None and not st.ended
    if member and not callable(watched.session):
        member = st.session == watched.session
    elif member:
        member = pid in set(_safe(watched.session, ()))
    if not member:
        os.close(pidfd)
        return None
    return pidfd, st.start


def _active(watched: _Watched) -> bool:
    """Whether the session runs code now, or has processes besides its worker."""
    return len(watched.pids) > 1 or _safe(watched.busy)


def _unreaped(pid: int, watched: _Watched) -> bool:
    """Whether ``pid`` is a process of the session that has ended and waits to be reaped (a zombie)."""
    st = strays.read_stat(pid)
    return st is not None and st.ended and (callable(watched.session) or st.session == watched.session)


def _has_ended(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _close_all(pidfds: dict[int, int]) -> None:
    for pidfd in pidfds.values():
        with contextlib.suppress(OSError):
            os.close(pidfd)
    pidfds.clear()


def _autogroups_enabled() -> bool:
    try:
        with open(_AUTOGROUP_ENABLED) as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def _set_autogroup_nice(watched: _Watched) -> bool:
    """Give the session's scheduling group its nice value; False to try again (the kernel lets unprivileged
    writers change one every 100 ms, host-wide)."""
    try:
        with open(f"/proc/{watched.worker_pid}/autogroup", "w") as fh:
            fh.write(str(watched.budget.nice))
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True  # gone, or not ours to change: nothing to retry


def _safe(call: Callable, default=False):
    try:
        return call()
    except Exception:
        return default
