"""How a session worker process starts: inside bubblewrap when it works, else a loudly labelled unisolated fallback.

Bubblewrap sandbox (one per worker): read-only view of the host root, with home directories, ``/run``, the
emulator's data directory and the project checkout hidden behind empty tmpfs mounts (the Python installation is
bound back read-only); the worker's own session directory bound read-write at the real path ``/mnt/data``; private
``/tmp``; new PID, network, IPC and UTS namespaces (no network at all, like a pool with egress disabled); an empty
environment plus PATH/HOME/LANG/MPLBACKEND; dies with its parent; its own session. When the emulator runs as root,
each worker drops to its own unprivileged uid so the process-count limit is per worker.

Unisolated fallback: the same worker without any of that; ``/mnt/data`` paths still work for Python file APIs
(mapped to the session directory inside the worker) and the working directory is the session directory.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import site
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger("azure_sessions.emulator")

SANDBOX_CHOICES = ("auto", "bubblewrap", "none")
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
SANDBOX_HELPERS = (Path(__file__).with_name("strays.py"),)  # standalone modules the worker loads from its side
SANDBOX_WORKER_DIR = "/run/azure-sessions-emulator"
PRELOAD_CANDIDATES = ("numpy", "pandas", "matplotlib.pyplot")
_UID_BASE, _UID_SPAN = 610_000, 100_000


@dataclass(frozen=True)
class Limits:
    """Per-worker resource limits (``None`` = no limit). Applied with setrlimit before any user code runs."""

    memory_mb: int | None = 4096
    cpu_seconds: int | None = 3600
    max_processes: int | None = 256
    file_size_mb: int | None = 1024
    tmp_mb: int = 512  # size of the sandbox's private /tmp (memory-backed)

    def as_rlimits(self, extra_processes: int = 0) -> dict[str, int | None]:
        mib = 1024 * 1024
        return {
            "memory_bytes": self.memory_mb * mib if self.memory_mb else None,
            "cpu_seconds": self.cpu_seconds,
            "max_processes": self.max_processes + extra_processes if self.max_processes else None,
            "file_size_bytes": self.file_size_mb * mib if self.file_size_mb else None,
            "core_bytes": 0,
        }


class SandboxUnavailable(RuntimeError):
    """``sandbox="bubblewrap"`` was requested but bubblewrap does not work here."""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _namespace_flags() -> list[str]:
    if _is_root():  # no user namespace: bwrap mounts as real root, the worker then drops to its own uid
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # fmt: skip
    return ["--unshare-all", "--cap-drop", "ALL"]


_probe_lock = threading.Lock()
_probe_result: dict[str, str | None] = {}


def bubblewrap_problem() -> str | None:
    """None when bubblewrap can start a sandbox with our namespace flags here, else the reason it cannot."""
    with _probe_lock:
        if "result" not in _probe_result:
            _probe_result["result"] = _probe()
        return _probe_result["result"]


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "the bwrap executable was not found on PATH"
    true = shutil.which("true") or "/bin/true"
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/mnt",
           *_namespace_flags(), "--die-with-parent", "--new-session", "--clearenv", true]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if proc.returncode != 0:
        return "bwrap failed: " + (proc.stderr.strip() or f"exit status {proc.returncode}")
    return None


def resolve_mode(sandbox: str) -> tuple[str, str | None]:
    """Map the user's choice to ("bubblewrap" | "unisolated", isolation warning or None)."""
    if sandbox not in SANDBOX_CHOICES:
        raise ValueError(f"sandbox must be one of {SANDBOX_CHOICES}, not {sandbox!r}")
    problem = None if sandbox == "none" else bubblewrap_problem()
    if sandbox == "bubblewrap" and problem:
        raise SandboxUnavailable(f"sandbox='bubblewrap' was requested but {problem}")
    if sandbox != "none" and problem is None:
        return "bubblewrap", None
    why = (
        "sandboxing was turned off (sandbox='none')" if sandbox == "none" else f"bubblewrap is unavailable: {problem}"
    )
    return "unisolated", (
        "Code runs UNISOLATED on this machine: " + why + ". Session code can read and write your files, use the "
        "network and see your processes. Install bubblewrap (e.g. `apt-get install bubblewrap`) on Linux to sandbox it."
    )


@dataclass
class Spawned:
    """A started worker process and the host resources that belong to it."""

    proc: subprocess.Popen
    guid: str
    data_dir: Path
    scratch_dir: Path | None
    log_path: Path
    uid: int | None
    isolated: bool


class Launcher:
    """Builds and starts worker processes for one emulator instance, under ``root`` (removed by the owner)."""

    def __init__(self, mode: str, root: Path, limits: Limits | None = None, instance_id: str = "") -> None:
        if mode not in ("bubblewrap", "unisolated"):
            raise ValueError(f"unknown sandbox mode {mode!r}")
        self.mode = mode
        self.root = root
        self.limits = limits or Limits()
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.sessions_dir = root / "sessions"
        self.logs_dir = root / "logs"
        self.scratch_root = root / "scratch"
        for path in (self.sessions_dir, self.logs_dir, self.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
        # The interpreter as invoked, not its resolved target: a venv's bin/python is a link to the base
        # interpreter, and only the link's location makes Python read pyvenv.cfg and use the venv's packages.
        self.python = os.path.abspath(sys.executable)
        self.preload = [name for name in PRELOAD_CANDIDATES if _installed(name)]
        self._drop_uid = mode == "bubblewrap" and _is_root()
        self._uids = itertools.count(secrets.randbelow(_UID_SPAN))  # distinct per instance, most likely
        self._mount_args = self._mounts() if mode == "bubblewrap" else []
        self._spawner_lock = threading.Lock()
        self._spawner: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="emulator-spawner")

    # -- command line -------------------------------------------------------------------------------------------
    def _mounts(self) -> list[str]:
        python_paths = _python_paths()
        masked = [Path(p) for p in ("/root", "/home", "/run")] + [self.root.resolve()]
        project = Path(__file__).resolve().parents[2]
        if not any(_under(project, p) for p in python_paths):  # a source checkout, not an installed package
            masked.append(project)
        masked = sorted({p for p in masked if p.exists() and not _under(p, Path("/tmp")) and p != Path("/")})
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--perms", "1777", "--size", str(self.limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(64 * 1024 * 1024), "--tmpfs", "/dev/shm"]  # fmt: skip
        for path in masked:  # tiny and read-only for the sandbox user: they only hide what is beneath
            args += ["--perms", "0555", "--size", str(1024 * 1024), "--tmpfs", str(path)]
        made: set[Path] = set()
        for path in python_paths:  # bind the interpreter back where a mask hides it
            cover = next((m for m in [*masked, Path("/tmp")] if _under(path, m)), None)
            if cover is None:
                continue
            for parent in reversed(path.parents):
                if _under(parent, cover) and parent != cover and parent not in made:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            args += ["--ro-bind", str(path), str(path)]
        args += ["--perms", "0755", "--dir", SANDBOX_WORKER_DIR]
        for script in (WORKER_SCRIPT, *SANDBOX_HELPERS):
            args += ["--ro-bind", str(script.resolve()), f"{SANDBOX_WORKER_DIR}/{script.name}"]
        return args

    def _env(self, home: str) -> dict[str, str]:
        return {
            "PATH": f"{os.path.dirname(self.python)}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": "/tmp" if self.mode == "bubblewrap" else home,
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "TERM": "dumb",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AZURE_SESSIONS_EMULATOR_INSTANCE": self.instance_id,
        }

    def spawn(self, preload: bool = False) -> Spawned:
        """Start a worker. Every process is forked from one long-lived thread: bubblewrap's --die-with-parent
        (PR_SET_PDEATHSIG) fires when the forking *thread* exits, which would kill workers started from
        short-lived request threads."""
        with self._spawner_lock:
            if self._spawner is None:
                raise RuntimeError("the launcher is closed")
            future = self._spawner.submit(self._spawn, preload)
        return future.result()

    def close(self) -> None:
        """Stop the spawner thread (after the owner killed the workers)."""
        with self._spawner_lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.shutdown(wait=True)

    def _spawn(self, preload: bool) -> Spawned:
        guid = str(uuid.uuid4())
        data_dir = self.sessions_dir / guid
        data_dir.mkdir(mode=0o700)
        log_path = self.logs_dir / f"{guid}.log"
        uid = _UID_BASE + next(self._uids) % _UID_SPAN if self._drop_uid else None
        # RLIMIT_NPROC counts every process of the (host) uid: a private uid per worker when we run as root and
        # bubblewrap; our current count plus the allowance otherwise; root without bubblewrap is exempt from it.
        own = 0 if uid is not None or _is_root() or not self.limits.max_processes else _count_own_processes()
        limits = self.limits.as_rlimits(extra_processes=own)
        if uid is None and _is_root():
            limits["max_processes"] = None
        if uid is not None:
            os.chown(data_dir, uid, uid)
        config = {
            "uid": uid,
            "gid": uid,
            "limits": limits,
            "preload": self.preload if preload else [],
            "max_stream_bytes": 1 << 20,
            "max_result_chars": 1_000_000,
        }
        scratch = None
        if self.mode == "bubblewrap":
            config |= {"data_dir": "/mnt/data", "map_mnt_data": False, "pid_namespace": True}
            env = self._env("/tmp")
            cmd = [shutil.which("bwrap") or "bwrap", *self._mount_args, "--perms", "0555", "--size", "1048576",
                   "--tmpfs", "/mnt",
                   "--bind", str(data_dir), "/mnt/data", "--chdir", "/mnt/data", *_namespace_flags(),
                   "--hostname", "session", "--die-with-parent", "--new-session", "--clearenv"]  # fmt: skip
            for key, value in env.items():
                cmd += ["--setenv", key, value]
            script = f"{SANDBOX_WORKER_DIR}/worker.py"
        else:
            scratch = self.scratch_root / guid
            scratch.mkdir(mode=0o700)
            config |= {"data_dir": str(data_dir), "map_mnt_data": True}
            env = self._env(str(scratch))
            cmd, script = [], str(WORKER_SCRIPT.resolve())
        cmd += [self.python, "-I", "-B", script, json_dumps(config)]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
                                    cwd=str(data_dir), bufsize=0, close_fds=True, start_new_session=True)  # fmt: skip
        return Spawned(proc, guid, data_dir, scratch, log_path, uid, self.mode == "bubblewrap")

    def describe(self) -> dict:
        return {"mode": self.mode, "limits": asdict(self.limits), "preload": self.preload, "root": str(self.root)}


def json_dumps(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _installed(module: str) -> bool:
    try:
        return find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _python_paths() -> list[Path]:
    """Directories the worker's Python needs, resolved, outermost first, without duplicates."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)]
    candidates += [*site.getsitepackages(), site.getusersitepackages()]
    candidates += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    paths: list[Path] = []
    for item in candidates:
        if item and os.path.isdir(item):
            path = Path(os.path.realpath(item))
            if path not in paths and path != Path("/"):
                paths.append(path)
    paths.sort(key=lambda p: len(p.parts))
    return [p for i, p in enumerate(paths) if not any(_under(p, q) for q in paths[:i])]


def _count_own_processes() -> int:
    """Processes (and threads) of this uid, so RLIMIT_NPROC can leave the worker a fixed allowance on top."""
    uid, count = os.getuid(), 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
    except OSError:
        return 0
    return count
