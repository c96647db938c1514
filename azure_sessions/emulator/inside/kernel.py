"""The session's kernel: its IPython shell behind the protocol. It runs one cell at a time in the main thread; a
control thread reads the host's messages meanwhile (a new cell, an interrupt, processes to reap).

A kernel is made and prepared once in the template; each forked worker then attaches its own session to it
(``session.enter``). It keeps only what running cells needs: never the worker's configuration, which holds host pids.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .capture import FdCapture
from .protocol import STREAMS, Channel, Exec, Exit, Interrupt, Log, Output, Ready, Reap, Result
from .results import cell_result, empty_namespace, figure_pngs
from .shell import make_shell

MAX_LOG_CHARS = 4000
"""Of one internal warning, what is sent to the host."""


def _ignore_sigint(signum, frame) -> None:
    """Between cells an interrupt that arrives late is dropped (the host only interrupts running cells)."""


class Kernel:
    """What runs user code, inside the sandbox."""

    def __init__(self, paths: Any = None) -> None:
        self.paths = paths  # pathmap.PathMap: /mnt/data and /tmp mapped without a mount namespace, else None
        self.shell: Any = None
        self.images: list[bytes] = []
        # the session's, once attached
        self.channel: Channel | None = None
        self.log_fd: int | None = 2  # the template's log; a worker's log pipe until it is ready, then None
        self.out: FdCapture | None = None
        self.err: FdCapture | None = None
        self.strays: ModuleType | None = None  # ends what a timed-out cell left running (None: the host does)
        self.whole_pid_namespace = False
        self.max_result_chars = 1_000_000
        self.max_image_bytes = 1 << 30
        self.policy: dict | None = None  # what policy.py installed
        self.confined: dict | None = None  # what confine.py applied (the Landlock tier)
        self.jobs: queue.Queue[Exec] = queue.Queue()
        self.running: str | None = None
        self.in_user_code = False
        self.interrupt_requested = False
        self.seq = 0

    # -- in the template -----------------------------------------------------------------------------------------
    def prepare(self, preload: list[str]) -> None:
        """What every session needs and a template can do once for all: imports, the shell, the warm-ups."""
        self.shell = make_shell(lambda: self.images, self._command)
        for module in preload:
            try:
                __import__(module)
            except Exception as exc:
                self.log(f"preload of {module} failed: {exc!r}")
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if "matplotlib.pyplot" in sys.modules:  # load fonts and the PNG writer now, not on the first plot
                self.shell.run_cell("import matplotlib.pyplot as __p; __p.figure(figsize=(1, 1)).gca().plot([0])\n"
                                    "del __p", store_history=False)  # fmt: skip
                figure_pngs()
            for warmup in ("pass", "1 / 0"):  # pay for the compile, display and traceback machinery now
                self.shell.run_cell(warmup, store_history=False)
        sys.last_type = sys.last_value = sys.last_traceback = None  # the warm-up's error is nobody's `%tb`

    def _command(self, line: str) -> str:
        """A ``!`` command line with ``/mnt/data`` and ``/tmp`` mapped, where they are mapped for Python."""
        return self.paths.command(line) if self.paths is not None else line

    # -- in the session's worker ---------------------------------------------------------------------------------
    def attach(self, channel: Channel, log_fd: int, out: FdCapture, err: FdCapture, *, strays: ModuleType | None,
               whole_pid_namespace: bool, max_result_chars: int, max_image_bytes: int, policy: dict | None,
               confined: dict | None) -> None:  # fmt: skip
        """Take the session's pipes, captured streams and settings, then start answering the host."""
        self.channel, self.log_fd, self.out, self.err = channel, log_fd, out, err
        self.strays, self.whole_pid_namespace, self.max_result_chars = strays, whole_pid_namespace, max_result_chars
        self.max_image_bytes = max_image_bytes
        self.policy, self.confined = policy, confined
        self.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), "utf-8", "backslashreplace",
                                       line_buffering=True)  # fmt: skip
        self.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), "utf-8", "backslashreplace",
                                       line_buffering=True)  # fmt: skip
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), "utf-8")
        sys.stdout, sys.stderr = self.stdout, self.stderr
        if "" not in sys.path:
            sys.path.insert(0, "")
        signal.signal(signal.SIGINT, _ignore_sigint)
        self._main_thread = threading.get_ident()
        self._forking = False  # the main thread is inside os.fork (its at-fork callbacks included)
        self._deferred = False  # an interrupt arrived meanwhile: raised once os.fork has returned
        self._sigint = self._on_sigint  # (one bound method, so that `is` recognizes it)
        os.fork = self._guarded_fork(os.fork)
        threading.Thread(target=self._control, name="control", daemon=True).start()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """A cell's SIGINT handler: ``KeyboardInterrupt``, but not inside ``os.fork``. Python runs a signal's handler
        at the first bytecode after the signal, and after a fork that is an at-fork callback's (logging's, or the
        cell's own), where Python prints the exception and drops it: a cell that forks in a loop would almost never
        see its interrupt. There it is deferred to the moment ``os.fork`` returns."""
        if self._forking:  # (handlers run in the main thread)
            self._deferred = True
            return
        raise KeyboardInterrupt

    def _guarded_fork(self, fork: Callable[[], int]) -> Callable[[], int]:
        def guarded_fork() -> int:
            main = threading.get_ident() == self._main_thread
            if main:
                self._forking = True
            try:
                pid = fork()
            finally:
                if main:
                    self._forking = False
            if pid == 0:
                self._deferred = False
            elif main and self._deferred:
                self._deferred = False
                raise KeyboardInterrupt
            return pid

        guarded_fork.__doc__ = fork.__doc__
        return guarded_fork

    def log(self, text: str) -> None:
        """An internal warning: to the log, or once the worker is ready (its log closed) to the host as ``Log``."""
        text = text.rstrip("\n") + "\n"
        with contextlib.suppress(OSError):
            if self.log_fd is not None:
                os.write(self.log_fd, text.encode("utf-8", "replace"))
            elif self.channel is not None:
                self.channel.write(Log(text=text[:MAX_LOG_CHARS]))

    def _control(self) -> None:
        while True:
            try:
                message = self.channel.read()
            except Exception:
                message = None
            match message:
                case None | Exit():
                    os._exit(0)
                case Exec():
                    self.jobs.put(message)
                case Reap(pids=pids):
                    self._reap(pids)
                case Interrupt(id=cell) if self.running == cell and self.in_user_code:
                    self.interrupt_requested = True
                    os.kill(os.getpid(), signal.SIGINT)

    @staticmethod
    def _reap(pids: list[int]) -> None:
        """Collect the ended processes that became our children, but leave those a ``Popen`` object owns: its
        ``wait()`` collects them and reports how they ended."""
        owned = _popen_pids()
        for pid in pids:
            if pid not in owned:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)

    def serve(self) -> None:
        """Say ready, then run the host's cells one after another (never returns)."""
        import IPython

        os.close(self.log_fd)  # no descriptor of the host but the protocol's pipes is left for user code to find
        self.log_fd = None
        self.channel.write(Ready(pid=os.getpid(), python=sys.version.split()[0], prefix=sys.prefix,
                                 ipython=IPython.__version__, policy=self.policy, confined=self.confined))  # fmt: skip
        while True:
            try:
                job = self.jobs.get()
                self.running = job.id
                result = self.run(job)
                self.running = None
                self.channel.write(result)
                if os.getpid() == 1 and self.strays:  # the namespace's init: orphans of the session become ours
                    with contextlib.suppress(OSError):
                        self._reap(self.strays.children(1))
            except KeyboardInterrupt:  # a late interrupt that arrived between cells
                continue

    def run(self, job: Exec, store_history: bool = True) -> Result:
        self.seq += 1
        self.images = []
        for capture, stream in zip((self.out, self.err), STREAMS, strict=True):
            capture.begin(self._live(job, stream) if job.live_output else None)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        interrupted, value, ok = False, None, False
        self.interrupt_requested = False
        try:
            mark = self.strays.Mark(self.whole_pid_namespace) if self.strays else None
        except OSError:  # no usable /proc: timed-out cells just leave their processes
            mark = None
        started = time.perf_counter()
        try:
            if signal.getsignal(signal.SIGINT) is _ignore_sigint:  # unless user code installed its own handler
                signal.signal(signal.SIGINT, self._sigint)
            self.in_user_code = True
            with empty_namespace(self.shell) if job.empty_namespace else contextlib.nullcontext():
                outcome = self.shell.run_cell(job.code, store_history=store_history)
            self.in_user_code = False
            ok, value = outcome.success, outcome.result
            interrupted = isinstance(outcome.error_in_exec, KeyboardInterrupt)
        except KeyboardInterrupt:
            self.in_user_code = False
            interrupted = True
            print("KeyboardInterrupt", file=self.stderr)
        finally:
            self.in_user_code = False
            if signal.getsignal(signal.SIGINT) is self._sigint:
                signal.signal(signal.SIGINT, _ignore_sigint)
        duration_ms = int((time.perf_counter() - started) * 1000)
        ended = 0
        if interrupted and self.interrupt_requested and mark:  # timed out: end what the cell left running
            try:
                ended = self.strays.end_strays(mark, self.whole_pid_namespace)
            except Exception as exc:
                self.log(f"ending leftover processes failed: {exc!r}")
        result = cell_result(self.images, value, self.max_result_chars, job.render, self.max_image_bytes)
        for stream in (self.stdout, self.stderr, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        return Result(id=job.id, ok=bool(ok) and not interrupted, stdout=self.out.collect(self.seq),
                      stderr=self.err.collect(self.seq), result=result, duration_ms=duration_ms,
                      interrupted=interrupted, ended_processes=ended)  # fmt: skip

    def _live(self, job: Exec, stream: str) -> Callable[[str], None]:
        """What hands a running cell's text on ``stream`` to the host, as it comes."""
        channel = self.channel
        return lambda text: channel.write(Output(id=job.id, stream=stream, text=text))


def _popen_pids() -> set[int]:
    """The pids that live ``subprocess`` / ``multiprocessing`` process objects will collect themselves."""
    import gc

    kinds = tuple(
        kind
        for kind in (
            getattr(sys.modules.get(name), "Popen", None) for name in ("subprocess", "multiprocessing.popen_fork")
        )
        if isinstance(kind, type)
    )
    return {obj.pid for obj in gc.get_objects() if kinds and isinstance(obj, kinds) and isinstance(obj.pid, int)}
