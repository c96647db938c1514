"""Host side of a worker process (the protocol, deadlines, interrupt, kill) and the pool of pre-started workers."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .inside import protocol, strays

if TYPE_CHECKING:
    from .guards import SessionGuards
    from .launcher import Launcher
    from .template import ForkedProcess
    from .tiers import Tier
    from .watchdog import Exceeded, Usage

log = logging.getLogger("azure_sessions.emulator")

READY_TIMEOUT = 60.0
_INTERRUPT_REPEAT = 0.1
REAP_WAIT = 5.0
"""How long the processes the watchdog ended may take to die before the worker is asked to collect them anyway."""
MAX_NOTICES = 5
"""What the watchdog did, said at most this many times to one cell (the first times, and the last)."""
BUDGET_NOTICE = "SessionBudgetExceeded"
"""How a cell's stderr names what the watchdog did to the session (the line reads like an exception's own)."""
_LOGGED_LINES = 20
LOG_TAIL_BYTES = 64 * 1024
"""Of a worker's log (what it wrote while setting itself up, then its ``Log`` messages), what the host keeps."""

OutputCallback = Callable[[str, str], None]
"""``on_output(stream, text)``: text a running cell wrote to ``stream`` ("stdout" | "stderr"), as it comes."""


class WorkerLost(Exception):
    """The worker process died, hung past the interrupt grace period, or broke the protocol."""


@dataclass
class CellResult:
    ok: bool
    stdout: str
    stderr: str
    result: Any
    duration_ms: int
    interrupted: bool = False
    timed_out: bool = False
    ended_processes: int = 0  # processes a timed-out cell left running, ended by the worker


@dataclass
class Spawned:
    """A started worker process and the host resources that belong to it."""

    proc: ForkedProcess
    guid: str
    data_dir: Path
    scratch_dir: Path  # its /tmp (and home, or /dev/shm), removed with it
    uid: int | None
    tier: Tier
    guards: SessionGuards | None = None  # what holds the session to its budget, once it is ready


class LogTail:
    """The last ``limit`` bytes of a worker's log: its log pipe (non-blocking) drained into memory until the worker
    closes it, then what it sends as ``Log`` messages. Nothing of it is written to disk."""

    def __init__(self, pipe: IO[bytes], limit: int = LOG_TAIL_BYTES) -> None:
        self._pipe: IO[bytes] | None = pipe
        self.fd = pipe.fileno()  # for a poll (the number is not ours once the pipe is closed)
        self._limit = limit
        self._data = bytearray()
        self._lock = threading.Lock()

    def drain(self) -> bool:
        """Read what the pipe holds now; closes it at its end. Returns whether it is still open."""
        with self._lock:
            while self._pipe is not None:
                try:
                    data = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    self._close()
                    break
                self._keep(data)
            return self._pipe is not None

    def add(self, text: str) -> None:
        with self._lock:
            self._keep(text.encode("utf-8", "replace"))

    def text(self, limit: int) -> str:
        self.drain()
        with self._lock:
            return self._data.decode("utf-8", "replace")[-limit:].strip()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _keep(self, data: bytes) -> None:
        self._data += data
        del self._data[: max(0, len(self._data) - self._limit)]

    def _close(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None


class WorkerProcess:
    """One sandboxed IPython process. Not thread-safe for executions: the owning session serializes them."""

    def __init__(self, spawned: Spawned) -> None:
        self._s = spawned
        self._tier = spawned.tier
        self.proc = spawned.proc
        self.guid = spawned.guid
        self.data_dir = spawned.data_dir
        self.scratch_dir = spawned.scratch_dir
        self.uid = spawned.uid
        self._rfd = self.proc.stdout.fileno()
        self._wfd = self.proc.stdin.fileno()
        self._frames = protocol.FrameReader(protocol.FROM_WORKER)
        self._poll = select.poll()
        self._poll.register(self._rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._log = LogTail(self.proc.stderr)
        self._poll.register(self._log.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._log_polled = True
        self._log_lines = 0  # Log messages written to this process's log
        self._kill_lock = threading.Lock()
        self._killed = False
        self._cleaned = False  # cleanup() ran (a deleted session's worker is also lost by its running cell)
        self._send_lock = threading.Lock()  # execute() and interrupt() write to the pipe from different threads
        # The pipes close only when no thread is reading or writing them: a number closed under a reader would be
        # reused by the next worker's pipe, and the reader would take that worker's replies (or write into it).
        self._fd_lock = threading.Lock()
        self._fd_users = 0
        self._fds_closed = False
        self._running: str | None = None  # the id of the cell being executed
        self._idle = threading.Event()
        self._idle.set()
        self._stopped_because: str | None = None  # why this side killed the worker, for the WorkerLost message
        self._interrupted = False  # interrupt() was asked for the running cell
        self._budget_interrupted: str | None = None  # the cell last interrupted for passing a budget
        self._guards = spawned.guards
        self._notices: list[str] = []  # what the watchdog did since the last cell's result, for the next one
        self._notice_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return not self._killed and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- protocol ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _pipes(self):
        """Use the protocol pipes; they stay open (their numbers not reusable) until the last user leaves."""
        with self._fd_lock:
            if self._fds_closed or self._killed:
                raise WorkerLost(self._stopped_because or self.describe_exit())
            self._fd_users += 1
        try:
            yield
        finally:
            with self._fd_lock:
                self._fd_users -= 1
            if self._killed:
                self._close_pipes()

    def _close_pipes(self) -> None:
        with self._fd_lock:
            if self._fds_closed or self._fd_users:
                return  # closed already, or the last user closes them when it leaves
            self._fds_closed = True
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()
        self._log.close()

    def _send(self, message: protocol.Message) -> None:
        data = protocol.frame(message)
        with self._pipes():
            try:
                with self._send_lock:
                    protocol.write_all(self._wfd, data)
            except OSError as exc:
                raise WorkerLost(self.describe_exit()) from exc

    def _recv(self, deadline: float) -> protocol.Message:
        with self._pipes():
            return self._read_message(deadline)

    def _read_message(self, deadline: float) -> protocol.Message:
        while True:
            try:
                message = self._frames.next()
            except protocol.FrameTooLarge:
                self.kill()
                raise WorkerLost("the worker sent an oversized reply and was stopped") from None
            except protocol.ProtocolError as exc:
                self.kill()
                raise WorkerLost(f"the worker sent a malformed reply and was stopped ({exc})") from None
            if isinstance(message, protocol.Log):
                self._worker_log(message.text)
                continue
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready = {fd for fd, _ in self._poll.poll(min(remaining, 3600) * 1000 + 1)}
            if self._log_polled and self._log.fd in ready and not self._log.drain():
                self._poll.unregister(self._log.fd)  # the worker closed it (it is ready) or died
                self._log_polled = False
            if self._rfd not in ready:
                continue
            try:
                data = os.read(self._rfd, 1 << 20)
            except OSError:
                data = b""
            if not data:
                raise WorkerLost(self._stopped_because or self.describe_exit())
            self._frames.feed(data)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        try:
            message = self._recv(time.monotonic() + timeout)
        except TimeoutError:
            self.cleanup()
            raise WorkerLost(f"the worker did not start within {timeout:.0f} s") from None
        except WorkerLost as exc:
            detail = self.log_tail()
            self.cleanup()
            raise WorkerLost(f"{exc}; worker log: {detail}" if detail else str(exc)) from None
        if not isinstance(message, protocol.Ready):
            self.cleanup()
            raise WorkerLost(f"unexpected first message from the worker: {message.op!r}")
        problem = self._tier.check_ready(message)
        if problem is not None:
            self.cleanup()
            raise WorkerLost(problem)
        if self._guards is not None:
            self._guards.watch(self.guid, worker_pid=self.pid, dirs=(self.data_dir, self.scratch_dir),
                               on_exceeded=self._over_budget, busy=lambda: self._running is not None)  # fmt: skip

    # -- the session's budget ------------------------------------------------------------------------------------
    def _over_budget(self, event: Exceeded) -> None:
        """What the watchdog did (on its thread): the next cell result's stderr says it in one line; past the task
        budget the worker collects what was ended (a ``wait`` for one of them then finds nothing); past the task or
        the disk budget the running cell is interrupted (once: a fork loop in the worker itself would otherwise
        refill what was ended until its timeout); a worker it ended says why it was lost."""
        with self._notice_lock:
            if event.news:
                self._notices.append(f"{BUDGET_NOTICE}: {event.message}.")
                del self._notices[MAX_NOTICES - 1 : -1]  # the first ones, and the latest
        if event.worker_ended:
            self._stopped_because = f"{event.message[0].upper()}{event.message[1:]}"
            return
        if event.kind == "tasks":  # past the task budget an ended process must not hold its task (a zombie) either
            inside = {pid: inner for pid in event.ended if (inner := _pid_in_its_namespace(pid)) is not None}
            threading.Thread(target=self._reap_ended, args=(inside,), name="emulator-budget-reap",
                             daemon=True).start()  # fmt: skip
        running = self._running
        if event.kind in ("disk", "tasks") and event.news and running is not None:
            with self._notice_lock:  # one interrupt per cell: it repeats itself until the cell ends
                first, self._budget_interrupted = self._budget_interrupted != running, running
            if first:
                threading.Thread(target=self.interrupt, name="emulator-budget-interrupt", daemon=True).start()

    def _reap_ended(self, pids: dict[int, int]) -> None:
        """Have the worker collect what the watchdog ended (host pid -> its pid in the worker's view) once it has
        died: the worker is its parent, or their subreaper, and an unreaped process still holds a task of the
        uid's ``RLIMIT_NPROC``."""
        deadline = time.monotonic() + REAP_WAIT
        while any((st := strays.read_stat(pid)) is not None and not st.ended for pid in pids):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if pids:
            with contextlib.suppress(WorkerLost):
                self._send(protocol.Reap(pids=sorted(pids.values())))

    def _take_notices(self) -> str:
        with self._notice_lock:
            notices, self._notices = self._notices, []
        return "".join(f"\n{notice}\n" for notice in notices)

    def usage(self, *, fresh_disk: bool = False) -> Usage | None:
        """What the session held at the watchdog's last measurement (its disk measured now with ``fresh_disk``);
        None before the worker is ready or after it is killed."""
        return self._guards.usage(self.guid, fresh_disk=fresh_disk) if self._guards is not None else None

    def disk_room(self) -> tuple[int, int] | None:
        """The bytes the session's files hold now and its disk budget, or None when it has no budget."""
        budget = self._guards.budget.disk_bytes if self._guards is not None else None
        usage = self.usage(fresh_disk=True) if budget is not None else None
        return (usage.disk_bytes, budget) if usage is not None and budget is not None else None

    def execute(
        self,
        code: str,
        timeout: float,
        grace: float = 3.0,
        on_output: OutputCallback | None = None,
        *,
        render: str = protocol.RENDER_LEGACY,
        empty_namespace: bool = False,
    ) -> CellResult:
        """Run one cell. Past ``timeout`` the cell gets SIGINT; past ``grace`` more the worker is killed. ``render``
        is how its last value is written and ``empty_namespace`` runs it in a namespace of its own (see
        ``protocol.Exec``)."""
        exec_id = uuid.uuid4().hex
        started_ticks = strays.boot_ticks()
        self._idle.clear()
        self._running = exec_id
        self._interrupted = False
        try:
            self._send(protocol.Exec(id=exec_id, code=code, live_output=on_output is not None, render=render,
                                     empty_namespace=empty_namespace))  # fmt: skip
            cell = self._await_result(exec_id, timeout, grace, on_output)
        finally:
            self._running = None
            self._idle.set()
        cell.stderr += self._take_notices()
        if cell.interrupted and (cell.timed_out or self._interrupted):
            # where the worker cannot see its processes, the host ends what the cell left running
            ended = self._tier.end_cell_leftovers(self.pid, started_ticks)
            if ended:  # the worker, their subreaper, collects them
                with contextlib.suppress(WorkerLost):
                    self._send(protocol.Reap(pids=sorted(ended)))
                cell.ended_processes += len(ended)
        return cell

    def _await_result(
        self, exec_id: str, timeout: float, grace: float, on_output: OutputCallback | None
    ) -> CellResult:
        deadline = time.monotonic() + timeout
        grace_ends: float | None = None  # set once the timeout has passed and the cell is being interrupted
        while True:
            try:
                message = self._recv(deadline)
            except TimeoutError:
                now = time.monotonic()
                if grace_ends is not None and now >= grace_ends:
                    self.kill()
                    raise WorkerLost(
                        f"the execution exceeded its timeout of {timeout:g} s and did not stop within {grace:g} s "
                        "of being interrupted, so the sandbox was terminated"
                    ) from None
                grace_ends = now + grace if grace_ends is None else grace_ends
                # Repeated until the cell ends: the worker raises again an interrupt Python drops (one raised inside
                # an at-fork callback), but one that lands while it does so is lost too.
                with contextlib.suppress(WorkerLost):
                    self._send(protocol.Interrupt(id=exec_id))
                deadline = min(grace_ends, now + _INTERRUPT_REPEAT)
                continue
            match message:
                case protocol.Result(id=result_id) if result_id == exec_id:
                    return CellResult(
                        ok=message.ok,
                        stdout=message.stdout,
                        stderr=message.stderr,
                        result=message.result,
                        duration_ms=message.duration_ms,
                        interrupted=message.interrupted,
                        timed_out=grace_ends is not None and message.interrupted,
                        ended_processes=message.ended_processes,
                    )
                case protocol.Output(id=output_id) if output_id == exec_id and on_output is not None:
                    _deliver(on_output, message.stream, message.text)

    def interrupt(self, grace: float = 3.0) -> bool:
        """Interrupt the running cell (KeyboardInterrupt, as at a timeout; the worker also ends processes the cell
        left running). A cell still running ``grace`` seconds later gets the worker killed, so the session is lost.
        Returns False when no cell was running."""
        exec_id = self._running
        if exec_id is None or not self.alive:
            return False
        deadline = time.monotonic() + grace
        self._interrupted = True
        # The worker drops an interrupt that arrives before the cell's code has started: repeat until it ends.
        while self._running == exec_id:
            with contextlib.suppress(WorkerLost):
                self._send(protocol.Interrupt(id=exec_id))
            remaining = deadline - time.monotonic()
            if self._idle.wait(min(_INTERRUPT_REPEAT, max(remaining, 0))):
                break
            if remaining <= 0:
                self._stopped_because = f"the execution did not stop within {grace:g} s of being interrupted, so the sandbox was terminated"
                self.kill()
                break
        return True

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def describe_exit(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except Exception:
            return "the sandbox process stopped responding"
        return self._tier.exit_reason(code)

    def log_tail(self, limit: int = 2000) -> str:
        """The end of what the worker logged (its set-up's failure, say), at most ``limit`` characters."""
        return self._log.text(limit)

    def _worker_log(self, text: str) -> None:
        self._log.add(text)
        self._log_lines += 1
        if self._log_lines <= _LOGGED_LINES:  # the rest stays in the tail: user code can send these too
            log.warning("session worker %s: %s", self.guid, text.strip()[:500])

    def kill(self) -> None:
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
        if self._guards is not None:
            self._guards.release(self.guid)
        self._tier.end_worker(self.proc)
        self._close_pipes()

    def cleanup(self) -> None:
        """Kill the process and delete its session directory and scratch directory (once)."""
        self.kill()
        with self._kill_lock:
            if self._cleaned:
                return
            self._cleaned = True
        for path in (self.data_dir, self.scratch_dir):
            _rmtree(path)


class WorkerPool:
    """Keeps ``size`` ready workers (libraries pre-imported) and refills in the background."""

    def __init__(self, launcher: Launcher, size: int) -> None:
        self.launcher = launcher
        self.size = max(0, int(size))
        self._ready: deque[WorkerProcess] = deque()
        self._spawning = 0
        self._inflight: WorkerProcess | None = None
        self._failures = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._refill, name="emulator-pool", daemon=True)
        self.cold_starts = 0

    def start(self) -> None:
        self.launcher.start_template()
        if self.size:
            self._thread.start()

    def wait_full(self, timeout: float) -> bool:
        """Block until the pool holds ``size`` ready workers (used at start-up and by tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ready) >= self.size or self._closed, timeout)

    def acquire(self) -> WorkerProcess:
        with self._cond:
            while self._ready:
                worker = self._ready.popleft()
                self._cond.notify_all()
                if worker.alive:
                    return worker
                worker.cleanup()
            if self._closed:
                raise WorkerLost("the emulator is shutting down")
        self.cold_starts += 1
        try:
            worker = self.launcher.start_worker()
        except (OSError, RuntimeError) as exc:
            raise WorkerLost(f"could not start a worker: {exc}") from None
        worker.wait_ready()
        return worker

    def _refill(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._ready) + self._spawning < self.size)
                if self._closed:
                    return
                self._spawning += 1
            worker = None
            try:
                worker = self.launcher.start_worker()
                with self._cond:
                    self._inflight = worker
                    closed = self._closed
                if closed:
                    worker.kill()
                worker.wait_ready()
            except Exception as exc:  # keep serving with cold starts; retry with a back-off
                if not self._closed:
                    log.warning("could not pre-start a session worker: %s", exc)
                worker = None
            with self._cond:
                self._spawning -= 1
                self._inflight = None
                if worker is not None and not self._closed:
                    self._ready.append(worker)
                    self._failures = 0
                    self._cond.notify_all()
                    continue
                if worker is None:
                    if self._closed:
                        return
                    self._failures += 1
                    self._cond.wait(timeout=min(30.0, 0.5 * 2**self._failures))
            if worker is not None:
                worker.cleanup()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready, self._ready = list(self._ready), deque()
            inflight = self._inflight
            self._cond.notify_all()
        if inflight is not None:
            inflight.kill()  # its wait_ready fails at once instead of delaying shutdown
        for worker in ready:
            worker.cleanup()
        if self._thread.is_alive():
            self._thread.join(timeout=READY_TIMEOUT + 5)
        self.launcher.close()


def _pid_in_its_namespace(pid: int) -> int | None:
    """``pid`` as its own PID namespace numbers it (the worker's, in the bubblewrap tier; a session cannot make
    another), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[-1]) for line in fh if line.startswith("NSpid:")), pid)
    except (OSError, ValueError):
        return None


def _deliver(on_output: OutputCallback, stream: str, text: str) -> None:
    """Hand live output to the caller's callback; its failure is logged, and the cell goes on."""
    try:
        on_output(stream, text)
    except Exception:
        log.exception("the live-output callback failed")


def _rmtree(path) -> None:
    """Remove a session's tree, also where its code took permissions away inside it. Only directories inside the
    tree are made writable again: never its parent (every session's directory lives there), never a link's target."""
    root = os.path.abspath(path)

    def retry(func, target, exc):
        if isinstance(exc, tuple):  # onerror gives exc_info
            exc = exc[1]
        if isinstance(exc, FileNotFoundError):
            return  # gone already
        with contextlib.suppress(OSError):
            for directory in (os.path.dirname(target), target):
                inside = directory == root or directory.startswith(root + os.sep)
                if inside and stat.S_ISDIR(os.lstat(directory).st_mode):
                    os.chmod(directory, 0o700)
            func(target)

    if os.path.lexists(path):
        shutil.rmtree(path, onexc=retry) if _has_onexc() else shutil.rmtree(path, onerror=retry)


def _has_onexc() -> bool:
    import inspect

    return "onexc" in inspect.signature(shutil.rmtree).parameters
