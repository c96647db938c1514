"""How a session worker process starts, in the strongest isolation tier the host allows.

1. **bubblewrap** (one sandbox per worker): read-only view of the host root, with home directories, ``/run``, the
   emulator's data directory and the project checkout hidden behind empty tmpfs mounts (the Python environment is
   bound back read-only); the worker's own session directory bound read-write at the real path ``/mnt/data``;
   private ``/tmp``; new PID, network, IPC and UTS namespaces (no network at all, like a pool with egress disabled);
   an empty environment plus PATH/HOME/LANG/MPLBACKEND; dies with its parent; its own session. When the emulator
   runs as root, each worker drops to its own unprivileged uid so the process-count limit is per worker.
2. **Landlock** (hosts where no user namespace can be created: containers, Hugging Face Spaces): the worker confines
   itself with Landlock and seccomp (``confine.py``) before any user code runs: it reads only the system
   directories and the Python environment, writes only its session directory and scratch directory, sees nothing
   of ``/proc``, opens no socket, and signals or traces nothing outside its session. ``/mnt/data`` and ``/tmp`` are
   mapped for Python's file APIs (``pathmap.py``). Root workers drop to their own uid here too.
3. **unisolated**: the same worker without any of that, labelled loudly; ``/mnt/data`` paths still work for Python
   file APIs and the working directory is the session directory.

Every worker runs the interpreter this process runs (a venv's own ``bin/python``), so the sandbox has exactly this
environment's packages, whatever the machine's default Python holds.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from . import fontcache
from .namespaces import SESSIONS_MOUNT
from .template import ForkedProcess, TemplateProcess, fork_worker

log = logging.getLogger("azure_sessions.emulator")

SANDBOX_CHOICES = ("auto", "bubblewrap", "landlock", "none")
"""What a user may ask for: ``auto`` takes the strongest tier that works here; ``none`` runs unisolated on purpose."""
TIERS = ("bubblewrap", "landlock", "unisolated")
TIER_LABELS = {"bubblewrap": "bubblewrap", "landlock": "Landlock", "unisolated": "not isolated"}
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
SANDBOX_WORKER_DIR = "/run/azure-sessions-emulator"
# standalone modules the worker loads from its side, per tier (under bubblewrap they are bound beside worker.py)
HELPERS = {
    "bubblewrap": ("strays", "namespaces"),
    "landlock": ("pathmap", "confine"),
    "unisolated": ("pathmap", "strays"),
}
SYSTEM_READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys/devices/system/cpu")
"""What a Landlock worker may read besides the Python environment: programs, libraries, configuration, CPU count."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
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
    """The requested isolation tier does not work here, or none does where code must not run unisolated."""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _namespace_flags() -> list[str]:
    """The template's sandbox: its own PID, network, IPC and UTS namespaces, and the capabilities it needs to give
    each forked worker namespaces of its own (namespaces.py); every worker drops them before running user code."""
    keep = ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN"]
    if _is_root():  # no user namespace: bwrap mounts as real root, each worker then drops to its own uid
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", *keep]  # fmt: skip
    return ["--unshare-all", *keep]


_probe_lock = threading.Lock()
_probe_result: dict[str, str | None] = {}


def _probed(tier: str, probe: Callable[[], str | None]) -> str | None:
    """Each tier is probed once per process (a sandbox is started to try it)."""
    with _probe_lock:
        if tier not in _probe_result:
            _probe_result[tier] = probe()
        return _probe_result[tier]


def bubblewrap_problem() -> str | None:
    """None when bubblewrap can start a sandbox with our namespace flags here, else the reason it cannot."""
    return _probed("bubblewrap", _probe_bubblewrap)


def _probe_bubblewrap() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "the bwrap executable was not found on PATH"
    # What the template does for each worker: a PID namespace made by a middle process, then the worker's own
    # mount and network namespaces with a fresh /proc.
    check = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def ok(result, what):\n"
        "    if result: raise SystemExit(f'{what} failed: {os.strerror(ctypes.get_errno())}')\n"
        "ok(libc.unshare(0x20000000), 'a PID namespace for a worker')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok(libc.unshare(0x40020000), 'mount and network namespaces for a worker')\n"
        "    ok(libc.mount(b'proc', b'/proc', b'proc', 0, None), 'mounting /proc for a worker')\n"
        "    os._exit(0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/mnt",
           *_namespace_flags(), "--die-with-parent", "--new-session", "--clearenv",
           os.path.abspath(sys.executable), "-I", "-c", check]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if proc.returncode != 0:
        return "bwrap failed: " + (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return None


def landlock_problem() -> str | None:
    """None when a worker can confine itself with Landlock and seccomp here, else the reason it cannot."""
    return _probed("landlock", _probe_landlock)


def _probe_landlock() -> str | None:
    """Confine a throw-away process exactly as a worker is confined (as the worker's uid when we are root) and check
    that it still finds the sandbox's packages but can no longer read ``/proc`` or open a socket."""
    if not sys.platform.startswith("linux"):
        return f"Landlock needs Linux (this is {sys.platform})"
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="azure-sessions-landlock-probe-") as scratch:
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if _is_root() else None
        if uid is not None:
            os.chmod(scratch, 0o711)
        spec = {
            "uid": uid,
            "confine": _confinement([scratch], _python_paths()),
            "helper": str(Path(__file__).with_name("confine.py")),
        }
        try:
            proc = subprocess.run([os.path.abspath(sys.executable), "-I", "-B", "-c", _LANDLOCK_PROBE, json.dumps(spec)],
                                  capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
                                  cwd=scratch)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the Landlock probe could not run: {exc}"
    lines = (proc.stdout.strip() or proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()
    return None if proc.returncode == 0 and lines[-1] == "ok" else lines[-1]


_LANDLOCK_PROBE = """
import importlib.util, json, os, socket, sys
spec = json.loads(sys.argv[1])
loader = importlib.util.spec_from_file_location("confine", spec["helper"])  # loaded first, as the template does
confine = importlib.util.module_from_spec(loader); loader.loader.exec_module(confine)
if spec["uid"] is not None:
    os.setgroups([]); os.setresgid(spec["uid"], spec["uid"], spec["uid"]); os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if not os.access(sys.prefix, os.R_OK | os.X_OK):
        print(f"the unprivileged uid each worker of a root emulator gets cannot reach the Python environment "
              f"{sys.prefix} (a directory above it is closed to other users, as `mktemp -d` makes them)"); sys.exit(1)
try:
    confine.confine(**spec["confine"])
except Exception as exc:
    print(f"Landlock and seccomp could not be applied: {getattr(exc, 'strerror', None) or exc}"); sys.exit(1)
missing = [m for m in ("IPython", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    print(f"the confined worker cannot read its Python environment ({sys.prefix}): {', '.join(missing)} not found"); sys.exit(1)
for name, attempt in (("/proc", lambda: open("/proc/1/stat").read()), ("a socket", socket.socket)):
    try:
        attempt(); print(f"the confined worker could still reach {name}"); sys.exit(1)
    except PermissionError:
        pass
print("ok")
"""


def resolve_mode(sandbox: str, refuse_unisolated: bool = False) -> tuple[str, str | None]:
    """Map the user's choice to (a tier of ``TIERS``, an isolation warning or None).

    ``auto`` takes bubblewrap, else Landlock, else runs unisolated with a warning, or, with ``refuse_unisolated``
    (a server strangers can reach), raises ``SandboxUnavailable`` saying why and what to do; ``bubblewrap`` and
    ``landlock`` require that tier; ``none`` runs unisolated on purpose.
    """
    if sandbox not in SANDBOX_CHOICES:
        raise ValueError(f"sandbox must be one of {SANDBOX_CHOICES}, not {sandbox!r}")
    if sandbox == "none":
        return "unisolated", _unisolated_warning("sandboxing was turned off (sandbox='none')")
    problems = {}
    for tier, probe in (("bubblewrap", bubblewrap_problem), ("landlock", landlock_problem)):
        if sandbox in (tier, "auto"):
            problems[tier] = probe()
            if problems[tier] is None:
                return tier, None
            if sandbox == tier:
                raise SandboxUnavailable(f"sandbox={tier!r} was requested but {problems[tier]}")
    why = "; ".join(f"{TIER_LABELS[tier]} is unavailable: {problem}" for tier, problem in problems.items())
    if refuse_unisolated:
        raise SandboxUnavailable(
            f"No isolation tier works on this host ({why}). Unisolated code would run next to this server's secrets "
            "and files for anyone who can reach it, so no code is run. Configure an Azure dynamic-sessions pool "
            "(AZURE_SESSIONS_POOL_ENDPOINT) for real isolation, or choose the sandbox 'none' on purpose if everyone "
            "who can reach this server may run code on it."
        )
    return "unisolated", _unisolated_warning(why)


def _unisolated_warning(why: str) -> str:
    return (
        "Code runs UNISOLATED on this machine: " + why + ". Session code can read and write your files, use the "
        "network and see your processes. On Linux, install bubblewrap (e.g. `apt-get install bubblewrap`) where user "
        "namespaces work, or use a kernel with Landlock (6.2 or newer, with landlock among its LSMs) elsewhere."
    )


@dataclass
class Spawned:
    """A started worker process and the host resources that belong to it."""

    proc: ForkedProcess
    guid: str
    data_dir: Path
    scratch_dir: Path | None
    log_path: Path
    uid: int | None
    mode: str  # a tier of TIERS

    @property
    def isolated(self) -> bool:
        return self.mode != "unisolated"


class Launcher:
    """Builds and starts worker processes for one emulator instance, under ``root`` (removed by the owner)."""

    def __init__(self, mode: str, root: Path, limits: Limits | None = None, instance_id: str = "") -> None:
        if mode not in TIERS:
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
        # The Python environment below /tmp (a checkout in a temporary directory): kept out of each session's /tmp.
        self._python_paths = _python_paths()
        self._python_under_tmp = [str(p) for p in self._python_paths if _under(p, Path("/tmp"))]
        self._drop_uid = mode != "unisolated" and _is_root()
        self._uids = itertools.count(secrets.randbelow(_UID_SPAN))  # distinct per instance, most likely
        self._mount_args = self._mounts() if mode == "bubblewrap" else []
        self._spawner_lock = threading.Lock()
        self._spawner: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="emulator-spawner")
        # Every worker is forked from one prepared template (template.py), then made this session's (namespaces,
        # limits, confinement) before it runs user code.
        self._template: TemplateProcess | None = None

    # -- command line -------------------------------------------------------------------------------------------
    def _mounts(self) -> list[str]:
        python_paths = self._python_paths
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
        for name in ("worker", *HELPERS["bubblewrap"]):
            script = WORKER_SCRIPT.with_name(f"{name}.py").resolve()
            args += ["--ro-bind", str(script), f"{SANDBOX_WORKER_DIR}/{script.name}"]
        return args

    def _env(self, home: str, tmp: str) -> dict[str, str]:
        return {
            "PATH": f"{os.path.dirname(self.python)}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": tmp,
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
        """Stop the spawner thread and the template (after the owner killed the workers)."""
        with self._spawner_lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.shutdown(wait=True)
        if self._template is not None:
            self._template.close()

    @property
    def template_pid(self) -> int | None:
        """The running template's pid (None before the first one is ready)."""
        template = self._template
        return template.pid if template is not None and template.alive else None

    def start_template(self) -> None:
        """Prepare the template in the background now, so the first session does not wait for it."""
        with self._spawner_lock:
            if self._spawner is not None:
                self._spawner.submit(self._ensure_template)

    def _ensure_template(self) -> TemplateProcess:
        if self._template is None or not self._template.alive:
            if self._template is not None:
                log.warning("the sandbox template stopped; starting a new one")
                self._template.close()
            home = self.root / "template"
            for path in (home, home / "home", home / "tmp"):
                path.mkdir(mode=0o700, exist_ok=True)
            config = {"helpers": HELPERS[self.mode], "preload": self.preload}
            if self.mode == "bubblewrap":
                command, env = self._bubblewrap_template(), {"PATH": "/usr/bin:/bin"}
            else:
                command = [self.python, "-I", "-B", str(WORKER_SCRIPT.resolve())]
                env = self._env(str(home / "home"), str(home / "tmp"))
                fontcache.seed(home / "home")  # (bubblewrap's template builds its list in its own /tmp)
            self._template = TemplateProcess(command, config, env, self.logs_dir / "template.log", home)
        return self._template

    def _bubblewrap_template(self) -> list[str]:
        """The template's bubblewrap sandbox: the workers' view of the host, every session's directory at
        ``SESSIONS_MOUNT`` (each worker keeps only its own, at /mnt/data), an empty environment."""
        cmd = [shutil.which("bwrap") or "bwrap", *self._mount_args, "--bind", str(self.sessions_dir), SESSIONS_MOUNT,
               "--perms", "0555", "--size", "1048576", "--tmpfs", "/mnt", "--perms", "0755", "--dir", "/mnt/data",
               *_namespace_flags(), "--hostname", "session", "--chdir", "/tmp", "--die-with-parent", "--new-session",
               "--clearenv"]  # fmt: skip
        for key, value in self._env("/tmp", "/tmp").items():
            cmd += ["--setenv", key, value]
        return [*cmd, self.python, "-I", "-B", f"{SANDBOX_WORKER_DIR}/worker.py"]

    def _spawn(self, preload: bool) -> Spawned:
        guid = str(uuid.uuid4())
        data_dir = self.sessions_dir / guid
        data_dir.mkdir(mode=0o700)
        log_path = self.logs_dir / f"{guid}.log"
        uid = _UID_BASE + next(self._uids) % _UID_SPAN if self._drop_uid else None
        # RLIMIT_NPROC counts every process of the (host) uid: a private uid per worker when we run as root; our
        # current count plus the allowance otherwise; root that keeps its uid is exempt from it.
        own = 0 if uid is not None or _is_root() or not self.limits.max_processes else _count_own_processes()
        limits = self.limits.as_rlimits(extra_processes=own)
        if uid is None and _is_root():
            limits["max_processes"] = None
        config = {
            "uid": uid,
            "gid": uid,
            "limits": limits,
            "helpers": HELPERS[self.mode],
            "preload": self.preload if preload else [],
            "max_stream_bytes": 1 << 20,
            "max_result_chars": 1_000_000,
        }
        scratch = None
        if self.mode == "bubblewrap":
            namespaces = {"guid": guid, "tmp_mb": self.limits.tmp_mb, "drop_capabilities": not _is_root(),
                          "tmp_binds": self._python_under_tmp}  # fmt: skip
            config |= {"data_dir": "/mnt/data", "pid_namespace": True, "namespaces": namespaces}
            env = self._env("/tmp", "/tmp")
        else:
            scratch = self.scratch_root / guid
            home, tmp = scratch / "home", scratch / "tmp"
            for path in (scratch, home, tmp):
                path.mkdir(mode=0o700)
            config |= {"data_dir": str(data_dir), "map_paths": {"/mnt/data": str(data_dir), "/tmp": str(tmp)},
                       "own_dirs": [str(data_dir), str(scratch), *self._python_under_tmp]}  # fmt: skip
            if self.mode == "landlock":
                config["confine"] = _confinement([str(data_dir), str(scratch)], self._python_paths)
            env = self._env(str(home), str(tmp))
        if uid is not None:
            for path in (data_dir, *([scratch, scratch / "home", scratch / "tmp"] if scratch else [])):
                os.chown(path, uid, uid)
        # bubblewrap's workers live in the template's sandbox, and end with it
        proc = fork_worker(self._ensure_template(), config, env, log_path, outlives_template=self.mode != "bubblewrap")
        return Spawned(proc, guid, data_dir, scratch, log_path, uid, self.mode)


def _confinement(read_write: list[str], python_paths: list[Path]) -> dict:
    """The arguments of ``confine.confine`` for a Landlock worker whose own directories are ``read_write``, in the
    Python environment at ``python_paths``."""
    read_only = [*SYSTEM_READ_ONLY, *(str(p) for p in python_paths)]
    # The server's process and process group, out of reach of signals even where Landlock has no signal scope.
    protected = sorted({os.getpid(), os.getpgid(0)})
    return {"read_only": read_only, "read_write": read_write, "devices": list(DEVICES), "protected_pids": protected}


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
