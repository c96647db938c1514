"""The in-sandbox side of a session: a persistent IPython shell behind a length-prefixed JSON pipe protocol.

Run as a standalone script (``python -I worker.py CONFIG_JSON``); it imports nothing from this package, because inside
bubblewrap only this file, its standalone helpers and the Python installation are visible. Its helpers: ``strays.py``
(ends what a timed-out cell left running), ``pathmap.py`` (``/mnt/data`` without a mount namespace) and
``confine.py`` (the Landlock tier), each loaded before the sandbox closes.

Protocol (both directions): 4-byte big-endian length, then a UTF-8 JSON object.
  host -> worker: {"op": "exec", "id": str, "code": str, "options"?: {"render"?: str, "empty_namespace"?: bool}}
                  | {"op": "interrupt", "id": str} | {"op": "exit"}
                  | {"op": "reap", "pids": [int]}   (processes the host ended: collect those that are our children)
  worker -> host: {"op": "ready", ...versions} | {"op": "result", "id", "ok", "stdout", "stderr", "result",
                   "duration_ms", "interrupted", "ended_processes"}
The protocol uses private copies of fds 0/1; fds 1/2 are then pipes drained by threads, so output written by
subprocesses (``!cmd``, ``os.system``) is captured per cell and can never corrupt the protocol.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import queue
import signal
import struct
import sys
import threading
import time

_HEADER = struct.Struct(">I")
_SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self._wlock = threading.Lock()

    def _read_exact(self, n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            data = os.read(self.rfd, min(left, 1 << 20))
            if not data:
                return None
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)

    def read(self) -> dict | None:
        head = self._read_exact(_HEADER.size)
        if head is None:
            return None
        body = self._read_exact(_HEADER.unpack(head)[0])
        return None if body is None else json.loads(body)

    def write(self, message: dict) -> None:
        data = json.dumps(message).encode("utf-8")
        data = _HEADER.pack(len(data)) + data
        with self._wlock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.wfd, view) :]


class FdCapture:
    """Points file descriptor ``fd`` at a pipe and collects what is written to it, one cell at a time."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self._r, self._w = os.pipe()
        os.dup2(self._w, fd)
        self._buf = bytearray()
        self._dropped = 0
        self._marker: bytes | None = None
        self._collected: tuple[bytes, int] | None = None
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, name=f"capture-{fd}", daemon=True).start()

    def _drain(self) -> None:
        while True:
            data = os.read(self._r, 65536)
            if not data:
                return
            with self._cond:
                self._buf += data
                marker = self._marker
                if marker is not None:
                    idx = self._buf.find(marker)
                    if idx >= 0:
                        self._collected = (bytes(self._buf[:idx]), self._dropped)
                        del self._buf[: idx + len(marker)]
                        self._dropped, self._marker = 0, None
                        self._cond.notify_all()
                        continue
                over = len(self._buf) - self.limit - 64
                if over > 0:  # keep the head and a short tail (the marker may straddle reads)
                    del self._buf[self.limit : self.limit + over]
                    self._dropped += over

    def restore(self) -> None:
        """Re-point the fd at the capture pipe in case user code closed or redirected it."""
        os.dup2(self._w, self.fd)

    def collect(self, seq: int) -> str:
        marker = b"\x1e\x1f<end-of-cell %d>\x1f\x1e" % seq
        with self._cond:
            self._marker, self._collected = marker, None
        try:
            self.restore()
            os.write(self._w, marker)
        except OSError:
            pass
        with self._cond:
            self._cond.wait_for(lambda: self._collected is not None, timeout=5.0)
            data, dropped = self._collected or (bytes(self._buf), self._dropped)
            if self._collected is None:
                self._buf.clear()
                self._dropped, self._marker = 0, None
        text = data.decode("utf-8", errors="replace")
        if dropped:
            text += f"\n[... {dropped} bytes of output truncated by the emulator ...]\n"
        return text


def _ignore_sigint(signum, frame) -> None:
    """Between cells an interrupt that arrives late is dropped (the host only interrupts running cells)."""


def _clean(text: str) -> str:
    """Make a string encodable as UTF-8 (lone surrogates become escapes)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def encode_value(value: object, max_chars: int) -> object:
    """Last-expression value -> wire value: JSON scalars natively, ``""`` for none, ``repr`` otherwise."""
    if value is None:
        return ""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        text = str(value)
    else:
        try:
            text = repr(value)
        except Exception as exc:  # a broken __repr__ must not break the session
            text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    if len(text) > max_chars:
        text = text[:max_chars] + f"... [{len(text) - max_chars} characters truncated by the emulator]"
    return _clean(text)


def render_value(value: object, render: str, max_chars: int) -> object:
    """The wire value of a cell's last value as the api-version renders it (``dialects.RENDER_*``): ``legacy`` is
    :func:`encode_value`; ``json`` writes a non-finite float as null; ``jupyter`` writes Jupyter's ``text/plain``
    of every value (``'nan'`` for the string, ``nan`` for the float) and null for none."""
    if render == "jupyter":
        if value is None:
            return None
        try:
            from IPython.lib.pretty import pretty

            text = pretty(value, max_width=79)
        except Exception:  # pretty() runs the value's own code: a broken __repr__ is written as such
            return encode_value(value, max_chars)
        return encode_value(text, max_chars)
    scalar = value.item() if type(value).__module__ == "numpy" and getattr(value, "shape", None) == () else value
    if render == "json" and isinstance(scalar, float) and not math.isfinite(scalar):
        return None
    return encode_value(value, max_chars)


@contextlib.contextmanager
def _empty_namespace(shell):
    """``useEmptyKernel``: the cell runs in a namespace of its own (builtins and IPython's own names only); the
    session's variables are back, untouched, when it ends."""
    saved = dict(shell.user_ns)
    keep = {k: v for k, v in saved.items() if k in shell.user_ns_hidden or (k.startswith("__") and k.endswith("__"))}
    shell.user_ns.clear()
    shell.user_ns.update(keep)
    try:
        yield
    finally:
        while True:  # an interrupt that arrives late must not leave the session's namespace half restored
            try:
                shell.user_ns.clear()
                shell.user_ns.update(saved)
                break
            except KeyboardInterrupt:
                continue


def _png_of(value: object) -> bytes | None:
    """PNG bytes for values Jupyter would show as an image (objects with _repr_png_, matplotlib figures)."""
    try:
        if hasattr(value, "savefig") and type(value).__name__ == "Figure":
            buf = io.BytesIO()
            value.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()
        repr_png = getattr(value, "_repr_png_", None)
        if callable(repr_png) and not isinstance(value, type):
            data = repr_png()
            if isinstance(data, tuple):
                data = data[0]
            if isinstance(data, str):
                data = base64.b64decode(data)
            return data if isinstance(data, bytes) and data else None
    except Exception as exc:
        print(f"Could not render the result as an image: {exc!r}", file=sys.stderr)
    return None


def _figure_pngs() -> list[bytes]:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    try:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png", bbox_inches="tight")
            images.append(buf.getvalue())
    except Exception as exc:
        print(f"Could not render a matplotlib figure: {exc!r}", file=sys.stderr)
    finally:
        plt.close("all")
    return images


def _apply_limits(config: dict) -> None:
    import resource

    if config.get("gid") is not None:
        os.setgroups([])
        os.setresgid(config["gid"], config["gid"], config["gid"])
    if config.get("uid") is not None:
        os.setresuid(config["uid"], config["uid"], config["uid"])
    limits = config.get("limits") or {}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the file-size limit fail with EFBIG
    for key, rlimit in (("memory_bytes", "RLIMIT_AS"), ("cpu_seconds", "RLIMIT_CPU"), ("max_processes", "RLIMIT_NPROC"),
                        ("file_size_bytes", "RLIMIT_FSIZE"), ("core_bytes", "RLIMIT_CORE")):  # fmt: skip
        value = limits.get(key)
        if value is not None and hasattr(resource, rlimit):
            resource.setrlimit(getattr(resource, rlimit), (int(value), int(value)))


class Kernel:
    """The session's IPython shell and the pipe protocol around it: what runs user code, inside the sandbox."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.chan: Channel | None = None
        self.log_fd = 2
        self.jobs: queue.Queue = queue.Queue()
        self.running: str | None = None
        self.in_user_code = False
        self.images: list[bytes] = []
        self.seq = 0
        self.interrupt_requested = False
        self.helpers: dict = {}
        self.shell = None
        self.strays = None  # the strays module: ends the processes a timed-out cell left running
        self.confined: dict | None = None  # what confine.py applied (the Landlock tier)
        self.paths = None  # pathmap.PathMap: /mnt/data and /tmp mapped without a mount namespace

    def load_helpers(self, names) -> None:
        """Load the standalone helper modules (before any sandbox closes: they live beside this file). The path
        mapping is installed at once, before IPython keeps its own reference to ``io.open``."""
        self.helpers = {name: _load_sibling(name) for name in names}
        if "pathmap" in self.helpers:
            self.paths = self.helpers["pathmap"].install()

    def prepare(self) -> None:
        """What every session needs and a template can do once for all: imports, the shell, the warm-ups."""
        self.shell = self._make_shell()
        for module in self.config.get("preload") or ():
            try:
                __import__(module)
            except Exception as exc:
                self.log(f"preload of {module} failed: {exc!r}")
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if "matplotlib.pyplot" in sys.modules:  # load fonts and the PNG writer now, not on the first plot
                self.shell.run_cell("import matplotlib.pyplot as __p; __p.figure(figsize=(1, 1)).gca().plot([0])\n"
                                    "del __p", store_history=False)  # fmt: skip
                _figure_pngs()
            for warmup in ("pass", "1 / 0"):  # pay for the compile, display and traceback machinery now
                self.shell.run_cell(warmup, store_history=False)
        sys.last_type = sys.last_value = sys.last_traceback = None  # the warm-up's error is nobody's `%tb`

    def enter_session(self) -> None:
        """Become this session's worker: fds 0/1 are its protocol pipes and fd 2 its log; limits, confinement,
        output capture, the /mnt/data mapping and the control thread are set up here, before any user code."""
        config = self.config
        self.chan = Channel(os.dup(0), os.dup(1))
        self.log_fd = os.dup(2)
        # under memory pressure the kernel ends a session, not the template
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("500")
        if config.get("namespaces"):
            self.helpers["namespaces"].enter(**config["namespaces"])
        _apply_limits(config)
        if config.get("confine"):
            self.confined = self.helpers["confine"].confine(**config["confine"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        limit = int(config.get("max_stream_bytes", 1 << 20))
        self.out, self.err = FdCapture(1, limit), FdCapture(2, limit)
        self.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), "utf-8", "backslashreplace", line_buffering=True
        )
        self.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), "utf-8", "backslashreplace", line_buffering=True
        )
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), "utf-8")
        sys.stdout, sys.stderr = self.stdout, self.stderr
        if config.get("map_paths"):  # no mount namespace: map /mnt/data and /tmp inside Python
            self.paths.set(config["map_paths"], own=config["own_dirs"])
        self.strays = self.helpers.get("strays")  # None where the host ends stray processes (no /proc here)
        os.chdir(config["data_dir"])
        if "" not in sys.path:
            sys.path.insert(0, "")
        signal.signal(signal.SIGINT, _ignore_sigint)
        threading.Thread(target=self._control, name="control", daemon=True).start()

    def _make_shell(self):
        import warnings

        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        kernel = self

        class QuietDisplayHook(DisplayHook):
            """Records the last expression's value without printing ``Out[n]:``."""

            def compute_format_data(self, result):
                return {}, {}

            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                pass

        class CapturingPublisher(DisplayPublisher):
            """display(): images become the cell's image result, everything else prints as text."""

            def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
                png = data.get("image/png")
                if png is not None:
                    kernel.images.append(base64.b64decode(png) if isinstance(png, str) else png)
                elif "text/plain" in data:
                    print(data["text/plain"])

        config = Config()
        config.HistoryManager.enabled = False
        config.InteractiveShell.colors = "NoColor"
        config.InteractiveShell.xmode = "Context"

        class SessionShell(InteractiveShell):
            displayhook_class = QuietDisplayHook
            display_pub_class = CapturingPublisher

            def ask_exit(self):
                """``exit()``/``quit()`` would end the kernel; a session keeps running, so this only warns."""
                print("exit() is ignored: the session keeps running.", file=sys.stderr)

        shell = SessionShell.instance(config=config)
        shell._showtraceback = lambda etype, evalue, stb: print(shell.InteractiveTB.stb2text(stb), file=sys.stderr)
        shell.system = shell.system_piped = self._system
        shell.getoutput = self._getoutput
        warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
        warnings.filterwarnings("ignore", message=".*is non-interactive, and thus cannot be shown")
        return shell

    def _system(self, cmd: str) -> None:
        """``!cmd``: a shell whose output goes to the captured fds 1/2 (no pty, so no ``\\r\\n``)."""
        import subprocess

        cmd = self._in_session(self.shell.var_expand(cmd, depth=1))
        proc = subprocess.Popen(cmd, shell=True, executable=_SHELL, stdin=subprocess.DEVNULL)
        try:
            self.shell.user_ns["_exit_code"] = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise

    def _in_session(self, command: str) -> str:
        """A ``!`` command line with ``/mnt/data`` and ``/tmp`` mapped, where they are mapped for Python."""
        return self.paths.command(command) if self.paths is not None else command

    def _getoutput(self, cmd: str, split: bool = True, depth: int = 0):
        """``x = !cmd`` / ``!!cmd``: the command's output as an SList."""
        import subprocess

        from IPython.utils.text import SList

        cmd = self._in_session(self.shell.var_expand(cmd, depth=depth + 1))
        proc = subprocess.run(cmd, shell=True, executable=_SHELL, stdin=subprocess.DEVNULL, capture_output=True)
        self.shell.user_ns["_exit_code"] = proc.returncode
        out = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
        return SList(out.splitlines()) if split else out

    def log(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.log_fd, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))

    def _control(self) -> None:
        while True:
            try:
                message = self.chan.read()
            except Exception:
                message = None
            if message is None or message.get("op") == "exit":
                os._exit(0)
            if message.get("op") == "exec":
                self.jobs.put(message)
            elif message.get("op") == "reap":
                self._reap(message.get("pids") or [])
            elif message.get("op") == "interrupt" and self.running == message.get("id") and self.in_user_code:
                self.interrupt_requested = True
                os.kill(os.getpid(), signal.SIGINT)

    @staticmethod
    def _reap(pids: list) -> None:
        """Collect the ended processes that became our children, but leave those a ``Popen`` object owns: its
        ``wait()`` collects them and reports how they ended."""
        owned = _popen_pids()
        for pid in pids:
            if pid not in owned:
                with contextlib.suppress(ChildProcessError, OSError, TypeError, ValueError):
                    os.waitpid(int(pid), os.WNOHANG)

    def run(self, code: str, store_history: bool = True, options: dict | None = None) -> dict:
        options = options or {}
        self.seq += 1
        self.images = []
        self.out.restore()
        self.err.restore()
        sys.stdout, sys.stderr = self.stdout, self.stderr
        interrupted, value, ok = False, None, False
        self.interrupt_requested = False
        whole_namespace = bool(self.config.get("pid_namespace"))
        try:
            mark = self.strays.Mark(whole_namespace) if self.strays else None
        except OSError:  # no usable /proc: timed-out cells just leave their processes
            mark = None
        started = time.perf_counter()
        try:
            if signal.getsignal(signal.SIGINT) is _ignore_sigint:  # unless user code installed its own handler
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self.in_user_code = True
            with _empty_namespace(self.shell) if options.get("empty_namespace") else contextlib.nullcontext():
                outcome = self.shell.run_cell(code, store_history=store_history)
            self.in_user_code = False
            ok, value = outcome.success, outcome.result
            interrupted = isinstance(outcome.error_in_exec, KeyboardInterrupt)
        except KeyboardInterrupt:
            self.in_user_code = False
            interrupted = True
            print("KeyboardInterrupt", file=self.stderr)
        finally:
            self.in_user_code = False
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, _ignore_sigint)
        duration_ms = int((time.perf_counter() - started) * 1000)
        ended = 0
        if interrupted and self.interrupt_requested and mark:  # timed out: end what the cell left running
            try:
                ended = self.strays.end_strays(mark, whole_namespace)
            except Exception as exc:
                self.log(f"ending leftover processes failed: {exc!r}")
        images = self.images + _figure_pngs()
        png = None if images else _png_of(value)
        if png is not None:
            images.append(png)
        max_chars = int(self.config.get("max_result_chars", 1_000_000))
        if images:
            result = {"type": "image", "format": "png", "base64_data": base64.b64encode(images[0]).decode("ascii")}
        else:
            result = render_value(value, options.get("render", "legacy"), max_chars)
        for stream in (self.stdout, self.stderr, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        return {
            "op": "result",
            "ok": bool(ok) and not interrupted,
            "stdout": self.out.collect(self.seq),
            "stderr": self.err.collect(self.seq),
            "result": result,
            "duration_ms": duration_ms,
            "interrupted": interrupted,
            "ended_processes": ended,
        }

    def serve(self) -> None:
        import IPython

        self.chan.write({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0], "prefix": sys.prefix,
                         "ipython": IPython.__version__, "confined": self.confined})  # fmt: skip
        while True:
            try:
                job = self.jobs.get()
                self.running = job.get("id")
                reply = self.run(job.get("code", ""), options=job.get("options"))
                reply["id"] = job.get("id")
                self.running = None
                self.chan.write(reply)
                if os.getpid() == 1 and self.strays:  # the namespace's init: orphans of the session become ours
                    with contextlib.suppress(OSError):
                        self._reap(self.strays.children(1))
            except KeyboardInterrupt:  # a late interrupt that arrived between cells
                continue


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


def _load_sibling(name: str):
    """A standalone helper module next to this file (bound into the sandbox beside it)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_emulator_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Template:
    """A fork server: one worker prepared once (imports, shell, warm-ups) that forks a new session's worker on each
    request from the host, in a few milliseconds and sharing the prepared memory copy-on-write.

    Control socket (an inherited ``SOCK_SEQPACKET`` fd): the host sends ``{"op": "fork", "id", "config", "env"}``
    with the new worker's stdin, stdout and log fds; the template answers ``{"op": "forked", "id", "pid"}`` with a
    pidfd of the child, and ``{"op": "exited", "pid", "status"}`` when it reaps one. The child takes nothing of the
    template's but its prepared memory: a new session id, its own fds and environment, fresh random state, then the
    session's limits and confinement before it answers ``ready``.
    """

    def __init__(self, config: dict) -> None:
        import socket

        self.sock = socket.socket(fileno=int(config["control_fd"]))
        self.kernel = Kernel(config)
        self.kernel.load_helpers(config.get("helpers", ()))
        # bubblewrap: every worker is PID 1 of a PID namespace of its own (namespaces.py does the rest)
        self.namespaces = self.kernel.helpers.get("namespaces")

    def serve(self) -> None:
        import gc
        import select
        import socket

        self.kernel.prepare()
        gc.collect()
        gc.freeze()  # the prepared objects stay out of the collector's way: their pages stay shared after fork
        if self.namespaces is not None:  # adopt the workers whose short-lived first parent made their PID namespace
            import ctypes

            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        own = os.pidfd_open(os.getpid())  # the host learns our pid as it sees it (we may be in a PID namespace)
        self._send({"op": "ready", "pid": os.getpid()}, [own])
        os.close(own)
        while True:
            readable, _, _ = select.select([self.sock, wake_r], [], [])
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                self._reap()
            if self.sock in readable:
                message, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 3)
                if not message:
                    os._exit(0)  # the host is gone
                request = json.loads(message)
                try:
                    pid = self._fork(request, fds, (wake_r, wake_w))
                    pidfd = os.pidfd_open(pid)
                except OSError as exc:
                    self._send({"op": "failed", "id": request["id"], "error": str(exc)})
                else:
                    self._send({"op": "forked", "id": request["id"], "pid": pid}, [pidfd])
                    os.close(pidfd)
                for fd in fds:
                    os.close(fd)

    def _fork(self, request: dict, fds: list[int], private: tuple[int, ...]) -> int:
        """Fork the worker of a new session; returns its pid (the template's child either way)."""
        if self.namespaces is None:
            pid = os.fork()
            if pid == 0:
                for fd in private:
                    os.close(fd)
                self._become(request, fds)
            return pid
        # A PID namespace applies to the children of whoever makes it: a middle process makes it, forks the worker
        # as its PID 1, reports the worker's pid and leaves; the template, a subreaper, adopts the worker.
        report_r, report_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                os.close(report_r)
                self.namespaces.unshare(self.namespaces.CLONE_NEWPID)
                pid = os.fork()
                if pid == 0:
                    for fd in (*private, report_w):
                        os.close(fd)
                    self._become(request, fds)
                os.write(report_w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(report_w)
        os.waitpid(middle, 0)
        with os.fdopen(report_r, "rb") as report:
            answer = report.read()
        if not answer:
            raise OSError("could not make a PID namespace for the new worker")
        return int(answer)

    def _send(self, message: dict, fds: list[int] = ()) -> None:
        import socket

        socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._send({"op": "exited", "pid": pid, "status": status})

    def _become(self, request: dict, fds: list[int]) -> None:
        """In the child: become the worker of one new session (never returns)."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()  # its own session id: the host finds every process of the session by it
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
            os.closerange(3, max(1 << 16, os.sysconf("SC_OPEN_MAX")))  # the control socket, the template's fds
            os.environ.clear()
            os.environ.update(request["env"])
            import tempfile

            tempfile.tempdir = None  # found again from the session's TMPDIR, not the template's
            if "numpy" in sys.modules:  # `random` reseeds itself after a fork; numpy's global generator does not
                sys.modules["numpy"].random.seed()
            kernel = self.kernel
            kernel.config = request["config"]
            kernel.enter_session()
        except BaseException as exc:
            _setup_failed(exc)
        kernel.serve()
        os._exit(0)


def _setup_failed(exc: BaseException) -> None:
    import traceback

    with contextlib.suppress(OSError):
        os.write(2, ("worker setup failed:\n" + "".join(traceback.format_exception(exc))).encode("utf-8", "replace"))
    os._exit(70)


def main() -> None:
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"data_dir": os.getcwd()}
    if config.get("template"):
        try:
            template = Template(config)
        except BaseException as exc:
            _setup_failed(exc)
        template.serve()
    kernel = Kernel(config)
    try:
        kernel.load_helpers(config.get("helpers", ()))
        kernel.enter_session()
        kernel.prepare()
    except BaseException as exc:
        _setup_failed(exc)
    kernel.serve()


if __name__ == "__main__":
    main()
