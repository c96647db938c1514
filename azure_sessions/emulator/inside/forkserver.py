"""The template: a fork server that prepares a worker once (imports, shell, warm-ups) and forks a new session's
worker on each request from the host, in a few milliseconds and sharing the prepared memory copy-on-write.

Control socket (an inherited ``SOCK_SEQPACKET`` fd, ``protocol.TemplateConfig.control_fd``): the host sends
``Fork`` with the new worker's stdin, stdout and log fds; the template answers ``Forked`` with a pidfd of the child
(or ``ForkFailed``), and ``Exited`` when it reaps one. The child takes nothing of the template's but its prepared
memory: a new session id, its own fds and environment, fresh random state, then the session's set-up
(``session.enter``) before it answers ``Ready``.

The template is a subreaper: whatever a worker started stays its descendant when the worker dies. When the socket
closes (the host is gone: it stopped, or died at any moment, even between two signals of a kill), the template
kills every descendant, stopped ones included, before it leaves.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import socket
import sys
import traceback
from typing import NoReturn

from . import strays
from .kernel import Kernel
from .protocol import (
    TO_TEMPLATE,
    Exited,
    Fork,
    Forked,
    ForkFailed,
    Message,
    TemplateConfig,
    TemplateReady,
    decode,
    from_json,
    warm_up,
)
from .protocol import encode as encode_message
from .session import Helpers, enter, setup_log

_PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> NoReturn:
    kernel = _run_template(argv)  # returns in a forked child only, with the template's frames gone
    kernel.serve()
    os._exit(0)


def _run_template(argv: list[str]) -> Kernel:
    try:
        server = ForkServer(from_json(TemplateConfig, argv[0]))
    except BaseException as exc:
        setup_failed(exc)
    return server.serve()


class ForkServer:
    def __init__(self, config: TemplateConfig) -> None:
        self.sock = socket.socket(fileno=config.control_fd)
        self.helpers = Helpers(config.helpers)
        self.kernel = Kernel(paths=self.helpers.paths)
        self.preload = config.preload
        self.workers: set[int] = set()  # forked and not yet reaped (the other children are adopted orphans)

    def serve(self) -> Kernel:
        """Prepare, then fork a worker per request until the host closes the socket. Returns only in a forked
        child: its session's kernel, set up and ready to serve."""
        self.kernel.prepare(self.preload)
        warm_up()  # the protocol's caches, made once here and shared by every worker
        gc.collect()
        gc.freeze()  # the prepared objects stay out of the collector's way: their pages stay shared after fork
        # Orphans come to us: the workers whose short-lived first parent made their PID namespace (bubblewrap), what
        # a dead worker started (the others); all of it ends with us (``_end_descendants``).
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        own = os.pidfd_open(os.getpid())  # the host learns our pid as it sees it (we may be in a PID namespace)
        self._send(TemplateReady(pid=os.getpid()), [own])
        os.close(own)
        while True:
            readable, _, _ = select.select([self.sock, wake_r], [], [])
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                self._reap()
            if self.sock in readable:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 3)
                if not data:  # the host is gone
                    _end_descendants()
                    os._exit(0)
                request = decode(data, TO_TEMPLATE)
                assert isinstance(request, Fork)
                try:
                    pid = self._fork()
                    if pid == 0:
                        return self._become(request, fds)
                    self.workers.add(pid)
                    pidfd = os.pidfd_open(pid)
                except OSError as exc:
                    self._send(ForkFailed(id=request.id, error=str(exc)))
                else:
                    self._send(Forked(id=request.id, pid=pid), [pidfd])
                    os.close(pidfd)
                for fd in fds:
                    os.close(fd)

    def _fork(self) -> int:
        """Fork the worker of a new session: its pid (the template's child either way), or 0 in the worker."""
        if self.helpers.namespaces is None:
            return os.fork()
        # A PID namespace applies to the children of whoever makes it: a middle process makes it, forks the worker
        # as its PID 1, reports the worker's pid and leaves; the template, a subreaper, adopts the worker.
        report_r, report_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            pid = -1
            try:
                os.close(report_r)
                self.helpers.namespaces.unshare(self.helpers.namespaces.CLONE_NEWPID)
                pid = os.fork()
                if pid > 0:
                    os.write(report_w, str(pid).encode())
            finally:
                if pid != 0:
                    os._exit(0)
            return 0  # the worker (its fds are closed when it becomes the session's)
        os.close(report_w)
        os.waitpid(middle, 0)
        with os.fdopen(report_r, "rb") as report:
            answer = report.read()
        if not answer:
            raise OSError("could not make a PID namespace for the new worker")
        return int(answer)

    def _send(self, message: Message, fds: list[int] = ()) -> None:
        socket.send_fds(self.sock, [encode_message(message)], list(fds))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.workers:
                self.workers.discard(pid)
                self._send(Exited(pid=pid, status=status))

    def _become(self, request: Fork, fds: list[int]) -> Kernel:
        """In the child: become the worker of one new session."""
        try:
            self.sock.detach()  # its number is closed below with the template's others, never again by this object
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()  # its own session id: the host finds every process of the session by it
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
            os.closerange(3, max(1 << 16, os.sysconf("SC_OPEN_MAX")))  # the control socket, the template's fds
            os.environ.clear()
            os.environ.update(request.env)
            import tempfile

            tempfile.tempdir = None  # found again from the session's TMPDIR, not the template's
            if "numpy" in sys.modules:  # `random` reseeds itself after a fork; numpy's global generator does not
                sys.modules["numpy"].random.seed()
            enter(self.kernel, self.helpers, request.config)
        except BaseException as exc:
            setup_failed(exc, setup_log())
        return self.kernel


def _end_descendants() -> None:
    """SIGKILL every process below this one (workers, what they started, orphans adopted), round after round until
    none is left, and collect them."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        strays.reap(strays.end_processes(lambda table: strays.descendants(me, table)), wait=False)


def setup_failed(exc: BaseException, log_fd: int = 2) -> NoReturn:
    with contextlib.suppress(OSError):
        os.write(
            log_fd, ("worker setup failed:\n" + "".join(traceback.format_exception(exc))).encode("utf-8", "replace")
        )
    os._exit(70)
