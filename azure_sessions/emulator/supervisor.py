"""Host side: a cap on the tasks (processes and threads) of each session, one session unable to exhaust it for another.

``RLIMIT_NPROC`` counts every task of a uid, and in the Landlock tier without root every session runs as the
server's uid: one session holding a few hundred sleeping processes made every other session's ``fork`` fail, and
new workers with it. Here each worker's seccomp policy (``policy.install`` with a ``notify_sock``) sends its
process-creating calls (``clone``, ``fork``, ``vfork``; ``clone3`` is refused so libraries use ``clone``) to this
supervisor, which answers "go on" below the session's cap and EAGAIN at it, as ``RLIMIT_NPROC`` would.

- **One thread for every session**: it polls each session's listener descriptor. A session's tasks are counted by
  its session id (every task keeps the worker's: the policy refuses ``setsid``) from ``/proc``, threads included.
  The cheap path does not read ``/proc``: while ``counted + granted < cap`` (tasks at the last count plus the
  calls let through since, as if none had ended) the call goes on at once; near the cap the supervisor counts
  again (one census of ``/proc``, ``census.py``, updates every session). A call let through may not have made its task yet when the
  count looks (its caller waits to be scheduled): each calling thread's last call counts as in flight until that
  thread calls again (a thread makes one call at a time), ends, or :data:`SETTLE_SECONDS` pass, so a count can
  only over-estimate, never let a session past its cap. A session at its cap is answered EAGAIN without a new
  count for :data:`HOLD_SECONDS`, so a fork bomb costs the host one scan per hold, not one per attempt.
- **A bounded share of the host**: the supervisor lives in the server's process, so each session's calls are answered
  at most :data:`RATE` per second (bursts of :data:`BURST`); past that, its calls are received and their answers
  held until the rate allows, their callers waiting in the kernel (killably) rather than the server's threads. A session
  spinning on ``fork`` or ``kill`` then costs the server about 3 % of a core, whatever it does.
- **Its limit: EINTR.** A call waiting for the supervisor sleeps interruptibly until the supervisor has received it
  (killably after that, where the kernel offers ``SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV``, 5.19). A signal landing
  in that window makes the call fail with EINTR when the signal's handler was installed without ``SA_RESTART``;
  ``fork`` never does that without a filter, so programs do not retry. dash (``/bin/sh``: ``subprocess`` with
  ``shell=True``, ``os.system``) is such a program: a pipeline whose first command exits at once sends it SIGCHLD
  while it forks the next, and it says "Cannot fork". Measured here (2 shared cores, load 5 to 25): 0 of 300
  pipelines fail without the cap, 4 to 35 of 300 through this supervisor (and 2 or 3 of 300 Python forks with a
  SIGCHLD handler); answering from a poll loop without the killable wait, about a third did. No receiver closes the window, so the exact cap is opt-in; the watchdog's
  task budget (``watchdog.py``), which ends processes past it a tick later, changes no call and is the default.
- **Never hung**: when the supervisor goes (its thread ends, the server crashes) every listener closes, and the
  kernel fails the sessions' process-creating calls with ENOSYS, pending ones included; a session's listener closes
  when the host stops watching it or reports hang-up once its last task has ended. A task waiting for an answer can
  always be killed.
- **Signals, where the tier guards them** (Landlock without its signal scope, the unisolated tier): ``kill``,
  ``tkill``, ``tgkill``, ``rt_sigqueueinfo`` and ``rt_tgsigqueueinfo`` are answered here too, and go on only when
  their target is of the session: a pid or thread id whose session id is the session's, ``kill(0, …)`` (its own
  process group), or a process group whose leader is of the session. Anything else is answered ESRCH, as if no such
  process existed, so a session can neither signal nor enumerate the server's threads or another session's
  processes; ``kill(-1, …)`` is answered EPERM.
- **The template is under no session's filter**: it forks new workers whatever sessions do, and sessions cannot
  lower its limits (the policy refuses ``prlimit64`` on other pids). With the supervisor in place workers should
  not set a uid-wide ``RLIMIT_NPROC`` at all: another session's tasks would count against it.

Host side of the plumbing: for each new worker the host makes a ``SOCK_SEQPACKET`` socket pair, hands one end to
the worker with its fork request, and calls :meth:`ProcessSupervisor.watch` with the other. The worker sends its
filter's listener over it (or why it has none) during its set-up; the supervisor takes it from there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

from .census import Census
from .inside import strays
from .inside.policy import LISTENER_MESSAGE, SIGNALLING, UNAVAILABLE_PREFIX

log = logging.getLogger("azure_sessions.emulator")

# <linux/seccomp.h>: struct seccomp_notif (80 bytes) and seccomp_notif_resp (24 bytes), their ioctls.
_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, instruction pointer, args
_RESPONSE = struct.Struct("=QqiI")  # id, val, error, flags
_IOCTL_RECV = 0xC000_0000 | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_IOCTL_SEND = 0xC000_0000 | (_RESPONSE.size << 16) | (ord("!") << 8) | 1
_FLAG_CONTINUE = 1
_LISTENER_LINK = "anon_inode:seccomp notify"

HOLD_SECONDS = 0.05
"""How long a session at its cap is refused without counting again."""
RATE = 1000.0
"""Calls of one session answered per second, sustained (a ``subprocess.run`` loop makes about 1000 a second)."""
BURST = 500
"""Calls of one session answered at once before :data:`RATE` applies (a worker's start makes about 5)."""
SWEEP_SECONDS = 2.0
"""How often sessions whose tasks have all ended are let go when no hang-up said so (see ``_run``)."""
SETTLE_SECONDS = 2.0
"""A call let through this long ago has made its task (or failed), even for a caller that does not call again."""


@dataclass(frozen=True)
class CapStatus:
    """A watched session's state, for the info route and tests."""

    cap: int
    tasks: int  # now
    granted: int  # process-creating calls let through, in all
    refused: int  # refused at the cap, in all
    listening: bool  # the supervisor holds the session's listener
    unavailable: str = ""  # why the worker has no cap (its kernel or libseccomp), when it said so


class _Session:
    __slots__ = (
        "cap",
        "channel",
        "counted",
        "full_until",
        "granted",
        "held",
        "key",
        "listener",
        "paused_until",
        "pending",
        "refilled",
        "refused",
        "session_id",
        "since_count",
        "tokens",
        "unavailable",
    )  # fmt: skip

    def __init__(self, key: object, channel: socket.socket, session_id: int, cap: int) -> None:
        self.key, self.channel, self.session_id, self.cap = key, channel, session_id, cap
        self.listener: int | None = None
        self.counted = 1  # the worker itself, until the first count
        self.since_count = 0
        self.pending: dict[int, float] = {}  # calling thread -> when its last call was let through
        self.full_until = 0.0
        self.granted = self.refused = 0
        self.unavailable = ""
        self.tokens, self.refilled, self.paused_until = float(BURST), time.monotonic(), 0.0
        self.held: deque[bytearray] = deque()  # calls received, answered when the rate allows


class ProcessSupervisor:
    """Answers every watched session's process-creating calls from one thread (started on the first ``watch``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[object, _Session] = {}
        self._commands: deque[tuple[str, _Session]] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._census = Census()  # used by the thread only
        self.scans = 0  # counts of /proc made, in all (for tests and benchmarks)
        self.answered = 0  # calls answered, in all
        self.cpu_seconds = 0.0  # the supervisor thread's CPU time spent answering them

    # -- the host's calls ---------------------------------------------------------------------------------------
    def watch(self, key: object, channel: socket.socket, session_id: int, cap: int) -> None:
        """Cap the session ``key`` (its tasks are those of session id ``session_id``, the worker's pid as the host
        sees it) at ``cap`` tasks; its worker sends its listener over ``channel`` (now owned by the supervisor)."""
        session = _Session(key, channel, session_id, cap)
        with self._lock:
            if self._closed:
                channel.close()
                raise RuntimeError("the process supervisor is closed")
            if key in self._sessions:
                channel.close()
                raise ValueError(f"session {key!r} is watched already")
            self._sessions[key] = session
            self._commands.append(("add", session))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emulator-process-cap", daemon=True)
                self._thread.start()
        self._wake()

    def unwatch(self, key: object) -> None:
        """Stop watching ``key`` (its session ended): its listener closes, so a task still alive can no longer
        create any."""
        with self._lock:
            session = self._sessions.pop(key, None)
            if session is not None:
                self._commands.append(("remove", session))
        if session is not None:
            self._wake()

    def status(self, key: object) -> CapStatus | None:
        """The session's state, its tasks counted now (a scan of /proc); None when it is not watched."""
        session = self._sessions.get(key)
        if session is None:
            return None
        tasks = session_tasks({session.session_id}).get(session.session_id, 0)
        return CapStatus(session.cap, tasks, session.granted, session.refused, session.listener is not None,
                         session.unavailable)  # fmt: skip

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread and close every listener (the sessions' process-creating calls then fail with ENOSYS)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout=10)
        else:
            self._shut()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        # Listeners are edge-triggered: a listener reports a hang-up whenever the kernel's count of its filter's
        # users is 0, which on some kernels (6.18 here) happens once a thread has ended while the session lives on;
        # level-triggered, that would wake this thread without end, and the session's real end then comes with no
        # edge: a sweep lets go of sessions whose tasks have all ended. Each wake-up is served while a notification
        # is pending.
        events = select.epoll()
        events.register(self._wake_r, select.EPOLLIN)
        by_fd: dict[int, _Session] = {}
        paused: set[_Session] = set()  # over their rate: served again at paused_until
        next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            while not self._closed:
                paused = {s for s in paused if s.listener is not None}  # not those let go meanwhile
                wake_at = min([next_sweep, *(s.paused_until for s in paused)])
                ready = events.poll(max(0.0, wake_at - time.monotonic()) + 0.001)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + SWEEP_SECONDS
                    for session in {id(s): s for s in by_fd.values() if s.listener is not None}.values():
                        if not self._alive(session):
                            paused.discard(session)
                            self._drop(events, by_fd, session, "listener")
                resumed = [s for s in paused if s.paused_until <= now and s.listener is not None]
                paused.difference_update(resumed)
                work = [*ready, *((s.listener, select.EPOLLIN) for s in resumed)]
                for fd, mask in work:
                    session = by_fd.get(fd)
                    if session is None:
                        continue
                    if fd != session.listener:
                        self._receive_listener(events, by_fd, session, mask)
                    elif not self._serve(session, mask, paused):
                        self._drop(events, by_fd, session, "listener")  # its last task has ended
                # The host's commands last: a descriptor they close cannot be reused by one received above and
                # then meet an event of this round that was its predecessor's.
                if any(fd == self._wake_r for fd, _ in ready):
                    self._take_commands(events, by_fd)
        except Exception:  # never leave sessions waiting on a dead thread: closing the listeners answers them
            log.exception("the process supervisor stopped")
        finally:
            self._shut(by_fd.values())
            events.close()

    def _serve(self, session: _Session, mask: int, paused: set[_Session]) -> bool:
        """Receive every pending call of the session (its caller then waits killably) and answer those its rate
        allows, the calls held earlier first; False when the session has ended."""
        while session.held and session not in paused:
            if self._take(session):
                self._respond(session, session.held.popleft())
            else:
                paused.add(session)
        checker = select.poll()
        checker.register(session.listener, select.POLLIN)
        while (pending := checker.poll(0)) and pending[0][1] & select.POLLIN:
            request = self._receive(session)
            if request is None:
                continue
            if session not in paused and self._take(session):
                self._respond(session, request)
            else:
                session.held.append(request)
                paused.add(session)
        if mask & select.EPOLLIN:
            return True
        # A hang-up alone: the session has ended only if no task of it lives on (see _run).
        return self._alive(session)

    def _alive(self, session: _Session) -> bool:
        """Whether a task of the session still runs (zombies make no calls)."""
        pids = self._census.members({session.session_id}).get(session.session_id, [])
        return any((stat := strays.read_stat(pid)) is not None and not stat.ended for pid in pids)

    @staticmethod
    def _take(session: _Session) -> bool:
        """Take one answer from the session's allowance; False when it is spent (then paused_until says when)."""
        now = time.monotonic()
        session.tokens = min(float(BURST), session.tokens + (now - session.refilled) * RATE)
        session.refilled = now
        if session.tokens >= 1:
            session.tokens -= 1
            return True
        session.paused_until = now + (1 - session.tokens) / RATE
        return False

    def _take_commands(self, events: select.epoll, by_fd: dict[int, _Session]) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        while True:
            with self._lock:
                if not self._commands:
                    return
                command, session = self._commands.popleft()
            if command == "add":
                by_fd[session.channel.fileno()] = session
                events.register(session.channel, select.EPOLLIN)
            else:
                for part in ("channel", "listener"):
                    self._drop(events, by_fd, session, part)

    def _receive_listener(
        self, events: select.epoll, by_fd: dict[int, _Session], session: _Session, mask: int
    ) -> None:
        message, fds = b"", []
        if mask & select.EPOLLIN:
            with contextlib.suppress(OSError):
                message, fds, _, _ = socket.recv_fds(session.channel, 1024, 1, socket.MSG_DONTWAIT)
        if message == LISTENER_MESSAGE and len(fds) == 1 and _is_listener(fds[0]) and session.listener is None:
            session.listener = fds.pop()
            by_fd[session.listener] = session
            events.register(session.listener, select.EPOLLIN | select.EPOLLET)
        elif message.startswith(UNAVAILABLE_PREFIX):
            session.unavailable = message[len(UNAVAILABLE_PREFIX) :].decode("utf-8", "replace")
            log.warning("session worker %s has no process cap: %s", session.session_id, session.unavailable)
        for fd in fds:  # anything else sent along is not ours to keep
            os.close(fd)
        if not message or not mask & select.EPOLLIN:  # the worker closed its end (sent, or gone): done with it
            self._drop(events, by_fd, session, "channel")

    def _drop(self, events: select.epoll, by_fd: dict[int, _Session], session: _Session, part: str) -> None:
        if part == "channel":
            if session.channel.fileno() >= 0:
                by_fd.pop(session.channel.fileno(), None)
                with contextlib.suppress(KeyError, ValueError, OSError):
                    events.unregister(session.channel)
                session.channel.close()
        elif session.listener is not None:
            by_fd.pop(session.listener, None)
            with contextlib.suppress(KeyError, ValueError, OSError):
                events.unregister(session.listener)
            os.close(session.listener)
            session.listener = None

    def _shut(self, sessions=()) -> None:
        with self._lock:
            everyone = {id(s): s for s in [*sessions, *self._sessions.values(), *(s for _, s in self._commands)]}
            self._sessions.clear()
            self._commands.clear()
        for session in everyone.values():
            session.channel.close()
            if session.listener is not None:
                with contextlib.suppress(OSError):
                    os.close(session.listener)
                session.listener = None

    # -- one call -----------------------------------------------------------------------------------------------
    def _receive(self, session: _Session) -> bytearray | None:
        started = time.thread_time()
        request = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(session.listener, _IOCTL_RECV, request, True)
        except OSError:
            request = None  # the caller was killed while it waited (or, see _run, no call was pending)
        self.cpu_seconds += time.thread_time() - started
        return request

    def _respond(self, session: _Session, request: bytearray) -> None:
        started = time.thread_time()
        call_id, caller, _, number, _, _, *args = _NOTIF.unpack_from(request)
        signalled = _signalling_calls().get(number)
        if signalled is not None:
            error = self._may_signal(session, signalled, args)
        else:
            now = time.monotonic()
            session.pending.pop(caller, None)  # its previous call has returned: its task is visible, or was not made
            error = 0 if self._decide(session, now) else errno.EAGAIN
            if not error:
                session.pending[caller] = now
        response = _RESPONSE.pack(call_id, 0, -error, 0 if error else _FLAG_CONTINUE)
        try:
            fcntl.ioctl(session.listener, _IOCTL_SEND, response)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # not "the caller is gone": never leave it waiting, fail its call instead
                with contextlib.suppress(OSError):
                    fcntl.ioctl(session.listener, _IOCTL_SEND, _RESPONSE.pack(call_id, 0, -errno.ENOSYS, 0))
        self.answered += 1
        self.cpu_seconds += time.thread_time() - started

    def _decide(self, session: _Session, now: float) -> bool:
        if now < session.full_until:
            session.refused += 1
            return False
        if session.counted + session.since_count >= session.cap:
            self._count_all(now)
            if session.counted >= session.cap:
                session.full_until = now + HOLD_SECONDS
                session.refused += 1
                return False
        session.since_count += 1
        session.granted += 1
        return True

    @staticmethod
    def _may_signal(session: _Session, call: str, args: list[int]) -> int:
        """0 when the call's target is of the session, else the errno to answer."""
        if call == "kill":
            pid = _pid(args[0])
            if pid == 0:
                return 0  # its own process group, which is in its own session
            if pid == -1:
                return errno.EPERM
            return (
                0 if _of_session(abs(pid), session.session_id) else errno.ESRCH
            )  # a process, or a group by its leader
        target = _pid(args[1] if call in ("tgkill", "rt_tgsigqueueinfo") else args[0])
        return 0 if target > 0 and _of_session(target, session.session_id) else errno.ESRCH

    def _count_all(self, now: float) -> None:
        """Count every watched session's tasks from one scan of /proc."""
        with self._lock:
            sessions = list(self._sessions.values())
        counts = self._census.tasks({s.session_id for s in sessions})
        self.scans += 1
        for session in sessions:
            for caller, when in list(session.pending.items()):
                if when < now - SETTLE_SECONDS or not os.path.exists(f"/proc/{caller}"):
                    del session.pending[caller]  # settled: its task (if any) is in the count
            session.counted = counts.get(session.session_id, 0) + len(session.pending)
            session.since_count = 0


def session_tasks(session_ids: set[int]) -> dict[int, int]:
    """Tasks (threads included, zombies too) of each of ``session_ids``, counted afresh."""
    return Census().tasks(session_ids)


def _pid(register: int) -> int:
    """A pid argument as the kernel reads it: the low 32 bits, signed."""
    value = register & 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _of_session(pid: int, session_id: int) -> bool:
    """Whether ``pid`` (a process or a thread) is a task of session ``session_id`` (a zombie included)."""
    stat = strays.read_stat(pid)
    return stat is not None and stat.session == session_id


_SIGNALLING_CALLS: dict[int, str] = {}


def _signalling_calls() -> dict[int, str]:
    """This architecture's numbers of the signalling calls."""
    if not _SIGNALLING_CALLS:
        import pyseccomp as sc

        for name in SIGNALLING:
            number = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if number >= 0:
                _SIGNALLING_CALLS[number] = name
    return _SIGNALLING_CALLS


def _is_listener(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _LISTENER_LINK
    except OSError:
        return False
