"""Host side of the fork server: one prepared worker (the template) per emulator, and the sessions forked from it.

Starting a worker from scratch means a fresh interpreter importing IPython, numpy, pandas and matplotlib: about a
CPU-second. The template pays that once; each new session's worker is forked from it (``inside/forkserver.py``)
and then set up for its own session, limits and confinement included, before any user code runs. The forked
workers share the template's prepared memory copy-on-write.

The template is the forked workers' parent, so it reaps them and reports how each ended; the host holds a pidfd for
each (race-free signals and exit detection) in a :class:`ForkedProcess`, which offers the part of
``subprocess.Popen`` that :class:`~azure_sessions.emulator.workers.WorkerProcess` uses. The template is also the
subreaper of everything its workers start, and when this process dies (its control socket closes) it kills all of
it before it leaves: no session's process outlives the server, whenever the server dies.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from .inside import protocol
from .inside.protocol import Exited, Fork, Forked, ForkFailed, TemplateConfig, TemplateReady, WorkerConfig

READY_TIMEOUT = 120.0
FORK_TIMEOUT = 30.0


class TemplateError(RuntimeError):
    """The template could not start, or stopped answering."""


class TemplateProcess:
    """A running template: ``fork()`` gives a new session's worker process."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path, *, helpers: list[str],
                 preload: list[str]) -> None:  # fmt: skip
        """Start ``command`` (the template's, from its tier) with its configuration: the tier's ``helpers``, the
        modules to ``preload``, the control socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        config = TemplateConfig(helpers=helpers, preload=preload, control_fd=theirs.fileno())
        argument = protocol.to_json(config)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([*command, argument], env=env, cwd=cwd,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         pass_fds=[theirs.fileno()], start_new_session=True)  # fmt: skip
        theirs.close()
        self.log_path = log_path
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._forked: dict[int, tuple[int, int] | str] = {}  # request id -> (pid, pidfd), or why it failed
        self._abandoned: set[int] = set()  # requests that timed out: their late workers are ended on arrival
        self._exited: dict[int, int] = {}  # pid -> wait status
        self._host_pids: dict[int, int] = {}  # the template's pid of a worker -> ours
        self._dead = False
        ready = self._receive(time.monotonic() + READY_TIMEOUT)
        if ready is None or not isinstance(ready[0], TemplateReady) or not ready[1]:
            self.close()
            raise TemplateError(f"the sandbox template did not start: {self._log_tail()}")
        self.pid = _host_pid(ready[1][0])  # the prepared interpreter itself (inside bubblewrap, not bwrap)
        os.close(ready[1][0])
        self._reader = threading.Thread(target=self._read, name="emulator-template", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    def fork(self, config: WorkerConfig, env: dict[str, str], fds: tuple[int, int, int]) -> tuple[int, int]:
        """Fork a worker for one session with ``fds`` as its stdin, stdout and log (fd 2); returns (pid, pidfd)."""
        request_id = next(self._ids)
        message = protocol.encode(Fork(id=request_id, config=config, env=env))
        with self._send_lock:
            try:
                socket.send_fds(self._sock, [message], list(fds))
            except OSError as exc:
                raise TemplateError(f"the sandbox template is gone: {exc}") from None
        deadline = time.monotonic() + FORK_TIMEOUT
        with self._cond:
            while request_id not in self._forked:
                remaining = deadline - time.monotonic()
                if self._dead or remaining <= 0:
                    self._abandoned.add(request_id)
                    raise TemplateError("the sandbox template stopped answering: " + self._log_tail())
                self._cond.wait(remaining)
            outcome = self._forked.pop(request_id)
        if isinstance(outcome, str):
            raise TemplateError(f"the sandbox template could not start a worker: {outcome}")
        return outcome

    def exit_status(self, pid: int, timeout: float | None) -> int | None:
        """The wait status of a forked worker once the template reaped it (None: not within ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while pid not in self._exited and not self._dead:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._exited.pop(pid, None)

    def close(self) -> None:
        """Stop the template, once the workers it forked have ended or when it has died (a template that sees its
        socket close ends every process it forked, as when this process dies: ``inside/forkserver.py``)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # the template leaves when its control socket closes
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=10)  # it sees the end of the socket; only then may the socket's number be reused
        self._sock.close()
        with self._cond:
            self._dead = True
            self._cond.notify_all()

    def _receive(self, deadline: float) -> tuple[protocol.Message, list[int]] | None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                return None
            if poller.poll(int(min(remaining, 1.0) * 1000)):
                try:
                    data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 1)
                except OSError:
                    return None
                return (protocol.decode(data, protocol.FROM_TEMPLATE), fds) if data else None

    def _read(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                with self._cond:
                    self._dead = True
                    self._cond.notify_all()
                return
            message = protocol.decode(data, protocol.FROM_TEMPLATE)
            with self._cond:
                match message:
                    case Forked() if fds and message.id in self._abandoned:
                        with contextlib.suppress(OSError):
                            signal.pidfd_send_signal(fds[0], signal.SIGKILL)
                        os.close(fds[0])
                    case Forked() if fds:
                        pid = self._host_pids[message.pid] = _host_pid(fds[0])
                        self._forked[message.id] = (pid, fds[0])
                    case ForkFailed():
                        self._forked[message.id] = message.error
                    case Exited():
                        self._exited[self._host_pids.pop(message.pid, message.pid)] = message.status
                self._cond.notify_all()

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-limit:].strip() or "(no log output)"
        except OSError:
            return "(no log)"


def _host_pid(pidfd: int) -> int:
    """The process's pid as this process sees it (the template may live in a PID namespace of its own)."""
    with open(f"/proc/self/fdinfo/{pidfd}") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Pid:"))


class ForkedProcess:
    """A worker forked by the template, with the ``subprocess.Popen`` surface the host's worker handle uses."""

    def __init__(
        self,
        template: TemplateProcess,
        pid: int,
        pidfd: int,
        stdin: IO[bytes],
        stdout: IO[bytes],
        stderr: IO[bytes],
        outlives_template: bool = True,
    ) -> None:
        self.pid = pid
        self.outlives_template = outlives_template  # False where it lives in the template's own sandbox
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr  # the worker's log while it sets itself up (non-blocking)
        self.returncode: int | None = None
        self._template = template
        self._pidfd = pidfd  # readable once the process has ended; kept open until this object goes
        self._lock = threading.Lock()

    def _ended(self, timeout: float | None) -> bool:
        """Whether the process has ended, waiting up to ``timeout`` seconds (None: until it does)."""
        poller = select.poll()  # not select(): a busy emulator's descriptors go past FD_SETSIZE
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))

    def poll(self) -> int | None:
        if self.returncode is None and self._ended(0):
            self._collect(timeout=1.0)  # it has ended: the template reports how in a moment
        if self.returncode is None and not self.outlives_template and not self._template.alive:
            self.kill()  # the end of the template's sandbox ends it too, if not already
            self._collect(timeout=1.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0)
            self._collect(timeout=5.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _collect(self, timeout: float) -> None:
        status = self._template.exit_status(self.pid, timeout)
        with self._lock:
            if self.returncode is None:  # without the template's report (it died) the end is known, not how
                self.returncode = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self._pidfd)


def fork_worker(
    template: TemplateProcess,
    config: WorkerConfig,
    env: dict[str, str],
    outlives_template: bool = True,
) -> ForkedProcess:
    """A new session's worker from ``template``, with fresh protocol pipes and a pipe for its log (what it writes
    while it sets itself up; it closes it before user code runs: no file of the host is ever open in a worker)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    log_r, log_w = os.pipe()
    os.set_blocking(log_r, False)
    try:
        pid, pidfd = template.fork(config, env, (stdin_r, stdout_w, log_w))
    except BaseException:
        for fd in (stdin_w, stdout_r, log_r):
            os.close(fd)
        raise
    finally:
        for fd in (stdin_r, stdout_w, log_w):
            os.close(fd)
    stdin = open(stdin_w, "wb", buffering=0)  # noqa: SIM115  (owned by the process handle, closed with it)
    stdout = open(stdout_r, "rb", buffering=0)  # noqa: SIM115
    stderr = open(log_r, "rb", buffering=0)  # noqa: SIM115
    return ForkedProcess(template, pid, pidfd, stdin, stdout, stderr, outlives_template)
