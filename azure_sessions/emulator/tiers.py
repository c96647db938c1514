"""The isolation tiers a session's worker can run in, one class each, strongest first.

1. :class:`BubblewrapTier` (one sandbox per emulator, a set of namespaces per worker): an allow-list of the host
   bound read-only (``SYSTEM_READ_ONLY``, the list the Landlock tier reads, and the Python environment), a minimal
   ``/dev`` and a fresh ``/proc``; nothing else of the host exists in it. The worker's own session directory bound
   read-write at the real path ``/mnt/data``; its ``/tmp`` and ``/dev/shm`` are directories on disk in its scratch
   directory, bound there; new PID, network, IPC and UTS namespaces (no network at all, like a pool with egress
   disabled); an empty environment plus PATH/HOME/LANG/MPLBACKEND; dies with its parent; its own session. When the
   emulator runs as root, each worker drops to its own unprivileged uid so the process-count limit is per worker.
2. :class:`LandlockTier` (hosts where no user namespace can be created: containers, Hugging Face Spaces): the worker
   confines itself with Landlock (``inside/confine.py``) before any user code runs: it reads only the system
   directories and the Python environment, writes only its session directory and scratch directory, sees nothing of
   ``/proc``, and signals or traces nothing outside its session. ``/mnt/data`` and ``/tmp`` are mapped for Python's
   file APIs (``inside/pathmap.py``). Root workers drop to their own uid here too.
3. :class:`UnisolatedTier`: the same worker without any of that, labelled loudly; ``/mnt/data`` paths still work
   for Python file APIs and the working directory is the session directory.

Every tier's workers install one seccomp policy (``inside/policy.py``) before any user code runs, each tier's
variant named by the tier's ``name``: no new namespaces or mounts, no ptrace, io_uring, BPF, perf or key rings, no
``setsid``, nothing aimed at another process by pid (``prlimit64``, ``setpriority``, the ``sched_*`` calls, ...), no
SysV IPC where the tier has no IPC namespace, no sockets in the Landlock tier, no signals to the server and the
template where neither a PID namespace nor Landlock keeps them inside the session.

Every tier gives each session a scratch directory on disk, made by the host (``SessionPlan.scratch_dir``), that holds
its ``/tmp`` (and, under bubblewrap, its ``/dev/shm``): nothing of a session is memory-backed but its processes'
memory, and the scratch directory counts in the session's disk budget. It is removed with the session.

A tier owns everything that differs between them: its probe, its label and description, the helper modules its
template loads, its template's command, the configuration of each worker, whether the host ends a session's
processes, how an exit status reads, and what killing a worker means. The rest of the emulator asks the tier object
and never compares tier names; a new tier (gVisor, nsjail) is one new class in ``ISOLATING``.

The user's choice (``CHOICES``: the ``--sandbox`` option, the ``sandbox`` argument, the playground's setting) is
resolved once, by :func:`resolve_tier`, into a tier object.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import fontcache
from .inside import policy, strays
from .inside.confine import SIGNAL_SCOPE_ABI, landlock_abi
from .inside.namespaces import SCRATCH_MOUNT, SESSIONS_MOUNT
from .inside.protocol import Confinement, Namespaces, PathMapping, Policy, Ready, Rlimits, WorkerConfig
from .launcher import INSIDE_DIR, UID_BASE, UID_SPAN, is_root, python_paths, under

if TYPE_CHECKING:
    from .launcher import Launcher
    from .template import ForkedProcess


SANDBOX_WORKER_DIR = "/run/azure-sessions-emulator"
"""Where bubblewrap's sandbox sees the in-sandbox files (``inside/``, bound read-only)."""
SYSTEM_READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys/devices/system/cpu")
"""What a worker may read of the host besides the Python environment, in every isolating tier: programs, libraries
(the dynamic loader and its cache), configuration (``/etc``: alternatives, locale, time zone), the CPU count. Landlock
allows reading below them; bubblewrap binds them (a merged-``/usr`` link such as ``/bin -> usr/bin`` as the same link)
and nothing else of the host."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
MAX_STREAM_BYTES = 1 << 20
MAX_RESULT_CHARS = 1_000_000
MAX_IMAGE_BYTES = 128 << 20  # with no image limit: what a protocol frame can carry once base64-encoded
SECCOMP = ("policy",) if sys.platform.startswith("linux") else ()
"""The policy helper, where the kernel has seccomp (every tier loads it there)."""


class SandboxUnavailable(RuntimeError):
    """The requested isolation tier does not work here, or none does where code must not run unisolated."""


@dataclass(frozen=True)
class SessionPlan:
    """How a new session's worker is made in a tier: its configuration, its environment, and the scratch directory
    the host made for it (its ``/tmp``, its home where that is not ``/tmp``, its ``/dev/shm`` under bubblewrap)."""

    config: WorkerConfig
    env: dict[str, str]
    scratch_dir: Path


_probe_lock = threading.Lock()
_probe_results: dict[type, str | None] = {}


class Tier:
    """An isolation tier. Class attributes say what it is; methods do what differs between tiers."""

    name: ClassVar[str]
    """What ``.emulator/info`` calls it (``sandboxMode``): ``bubblewrap``, ``landlock``, ``unisolated``."""
    choice: ClassVar[str]
    """The user's choice that requires this tier (``CHOICES``)."""
    label: ClassVar[str]
    """A badge's word for it."""
    description: ClassVar[str]
    """A sentence's words for it."""
    isolated: ClassVar[bool]
    helpers: ClassVar[tuple[str, ...]]
    """The helper modules of ``inside/`` its template loads (``inside/session.py: HELPERS``)."""
    private_uids: ClassVar[bool]
    """A root emulator gives each worker an unprivileged uid of its own."""
    host_ends_session_processes: ClassVar[bool]
    """The worker cannot see its session's processes (no ``/proc``): the host finds and ends them."""
    workers_outlive_template: ClassVar[bool]
    """False where workers live in the template's own sandbox and end with it."""
    seccomp: ClassVar[policy.TierRules]
    """What its sandbox already holds, hence what the seccomp policy of its workers must add."""

    @property
    def warning(self) -> str | None:
        """What a user must be told before running code in it (None for an isolating tier)."""
        return None

    @property
    def summary(self) -> str:
        """The command line's banner for it."""
        return self.description

    # -- whether it works here -------------------------------------------------------------------------------------
    @classmethod
    def problem(cls) -> str | None:
        """None when this tier works on this host, else why not (probed once per process)."""
        with _probe_lock:
            if cls not in _probe_results:
                _probe_results[cls] = cls._probe()
            return _probe_results[cls]

    @classmethod
    def _probe(cls) -> str | None:
        return None

    def prepare_host(self) -> None:
        """What this process does once it has chosen the tier."""

    def info(self) -> dict[str, Any]:
        """What ``.emulator/info`` says of it, beyond its name (every tier has the same keys)."""
        return {"landlockAbi": None}

    # -- starting workers ----------------------------------------------------------------------------------------
    def template_command(self, launcher: Launcher, home: Path) -> tuple[list[str], dict[str, str]]:
        """The command line (without its configuration argument) and environment of the template."""
        command = [launcher.python, "-I", "-B", str(INSIDE_DIR / "main.py")]
        fontcache.seed(home / "home")  # (bubblewrap's template builds its list in its own /tmp)
        return command, launcher.env(str(home / "home"), str(home / "tmp"))

    def new_session(
        self, launcher: Launcher, guid: str, data_dir: Path, uid: int | None, limits: Rlimits, *, supervised: bool
    ) -> SessionPlan:
        """A new session's worker: its configuration and environment (and its scratch directory, made here);
        ``supervised``: the process supervisor answers its process-creating calls (the exact task cap)."""
        raise NotImplementedError

    def signal_scope(self) -> bool:
        """Whether something besides the seccomp policy keeps a session's signals inside it (Landlock's scope)."""
        return False

    def worker_policy(self, launcher: Launcher, *, supervised: bool) -> Policy | None:
        """The seccomp policy of this tier's workers (None where the kernel has no seccomp); the protected pids only
        where the filter must guard them."""
        if "policy" not in self.helpers:
            return None
        rules = self.seccomp.scoped(self.signal_scope())
        return _policy(rules, launcher.protected_pids() if rules.guard_signals else [], supervised=supervised)

    @staticmethod
    def _make_scratch(launcher: Launcher, guid: str, *subdirs: str, mode: int = 0o700) -> Path:
        """The session's scratch directory (``mode``) and its ``subdirs`` (0700), on disk under the emulator's root."""
        scratch = launcher.scratch_root / guid
        scratch.mkdir(mode=mode)
        os.chmod(scratch, mode)  # whatever the umask
        for name in subdirs:
            (scratch / name).mkdir(mode=0o700)
        return scratch

    def check_ready(self, ready: Ready) -> str | None:
        """None when a worker's ``Ready`` shows the set-up this tier requires, else what is missing."""
        if "policy" in self.helpers and not ready.policy:
            return "the worker did not install its seccomp policy"
        return None

    # -- ending them ---------------------------------------------------------------------------------------------
    def end_cell_leftovers(self, worker_pid: int, since_ticks: int) -> set[int]:
        """Processes an interrupted cell left running that the host must end (the worker ends them itself where it
        can see them); returns their pids."""
        return set()

    def end_worker(self, proc: ForkedProcess) -> None:
        """Kill a worker and whatever of its session must go with it; waits for the worker."""
        _kill_group_and_wait(proc)

    def exit_reason(self, code: int) -> str:
        """What a worker's exit code (``Popen.returncode``) says about how it ended."""
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the sandbox process was killed by signal {name}"
        return f"the sandbox process exited unexpectedly with status {code}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# ---------------------------------------------------------------------------------------------------------------------
class BubblewrapTier(Tier):
    name = "bubblewrap"
    seccomp = policy.TierRules(name, sockets=True, sysv_ipc=True, guard_signals=False)  # its own net, IPC, PID ns
    choice = "bubblewrap"
    label = "bubblewrap"
    description = "bubblewrap sandbox"
    isolated = True
    helpers = ("strays", "namespaces", *SECCOMP)
    private_uids = True
    host_ends_session_processes = False  # the worker sees its whole PID namespace
    workers_outlive_template = False  # they live in the template's sandbox

    @property
    def summary(self) -> str:
        return (
            "bubblewrap (no network; the system directories and the Python environment only, read-only; "
            "private /mnt/data and /tmp per session)"
        )

    @classmethod
    def _probe(cls) -> str | None:
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

    def template_command(self, launcher: Launcher, home: Path) -> tuple[list[str], dict[str, str]]:
        """The template's bubblewrap sandbox: the workers' view of the host, the template's own ``/tmp`` (its HOME,
        with matplotlib's font list), every session's directory at ``SESSIONS_MOUNT`` and every scratch directory at
        ``SCRATCH_MOUNT`` (each worker keeps only its own, at /mnt/data, /tmp and /dev/shm), an empty environment."""
        fontcache.seed(home / "tmp")
        cmd = [shutil.which("bwrap") or "bwrap", *_mounts(launcher, home / "tmp"), "--bind",
               str(launcher.sessions_dir), SESSIONS_MOUNT, "--bind", str(launcher.scratch_root), SCRATCH_MOUNT,
               "--perms", "0555", "--size", "1048576", "--tmpfs", "/mnt", "--perms", "0755", "--dir", "/mnt/data",
               "--remount-ro", "/", *_namespace_flags(), "--hostname", "session", "--chdir", "/tmp",
               "--die-with-parent", "--new-session", "--clearenv"]  # fmt: skip
        for key, value in launcher.env("/tmp", "/tmp").items():
            cmd += ["--setenv", key, value]
        return [*cmd, launcher.python, "-I", "-B", f"{SANDBOX_WORKER_DIR}/inside/main.py"], {"PATH": "/usr/bin:/bin"}

    def new_session(
        self, launcher: Launcher, guid: str, data_dir: Path, uid: int | None, limits: Rlimits, *, supervised: bool
    ) -> SessionPlan:
        # Searchable by the template, which binds the subdirectories as root without CAP_DAC_OVERRIDE.
        scratch = self._make_scratch(launcher, guid, "tmp", "shm", mode=0o711)
        namespaces = Namespaces(guid=guid, tmp_dir=f"{SCRATCH_MOUNT}/{guid}/tmp", shm_dir=f"{SCRATCH_MOUNT}/{guid}/shm",
                                drop_capabilities=not is_root(), tmp_binds=launcher.python_under_tmp)  # fmt: skip
        config = _worker_config(launcher, uid, limits, self.worker_policy(launcher, supervised=supervised),
                                data_dir="/mnt/data", whole_pid_namespace=True, namespaces=namespaces,
                                confinement=None, path_mapping=None)  # fmt: skip
        return SessionPlan(config, launcher.env("/tmp", "/tmp"), scratch_dir=scratch)

    def exit_reason(self, code: int) -> str:
        if code > 128:  # bwrap reports its child's fatal signal this way
            with contextlib.suppress(ValueError):
                return f"the sandbox process was killed by signal {signal.Signals(code - 128).name}"
        return super().exit_reason(code)


def _namespace_flags() -> list[str]:
    """The template's sandbox: its own PID, network, IPC and UTS namespaces, and the capabilities it needs to give
    each forked worker namespaces of its own (inside/namespaces.py); every worker drops them before user code."""
    keep = ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN"]
    if is_root():  # no user namespace: bwrap mounts as real root, each worker then drops to its own uid
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", *keep]  # fmt: skip
    return ["--unshare-all", *keep]


def _mounts(launcher: Launcher, template_tmp: Path) -> list[str]:
    """The host as bubblewrap's sandbox shows it: a minimal ``/dev``, a fresh ``/proc``, the allow-list
    ``SYSTEM_READ_ONLY`` and the Python environment read-only, the template's own ``/tmp`` (``template_tmp``), the
    in-sandbox files at ``SANDBOX_WORKER_DIR``. Nothing else of the host exists in it: not the homes, ``/opt``,
    ``/srv``, ``/var``, other checkouts, the emulator's data. (A Python environment below ``/tmp`` is bound after the
    template's ``/tmp``; each worker binds it back into its own, ``Namespaces.tmp_binds``.)"""
    made: set[Path] = set()
    args = ["--dev", "/dev", "--proc", "/proc", *system_binds(made=made), "--bind", str(template_tmp), "/tmp"]
    shown = _system_dirs(SYSTEM_READ_ONLY)
    for path in launcher.python_paths:
        if not any(under(path, system) for system in shown):
            args += [*_parents(path, made), "--ro-bind", str(path), str(path)]
    inside = Path(SANDBOX_WORKER_DIR, "inside")
    return [*args, *_parents(inside, made), "--ro-bind", str(INSIDE_DIR.resolve()), str(inside)]


def system_binds(system: tuple[str, ...] = SYSTEM_READ_ONLY, made: set[Path] | None = None) -> list[str]:
    """bubblewrap's arguments that show ``system`` read-only at the same paths: each directory bound; a link to
    one of them (merged ``/usr``: ``/bin -> usr/bin``, ``/lib64 -> usr/lib64``) made the same link, so paths resolve
    as on the host; a link elsewhere shown as its target's contents; what this host lacks left out."""
    made = set() if made is None else made
    shown = _system_dirs(system)
    args: list[str] = []
    for name in system:
        path = Path(name)
        if not os.path.islink(path):
            if path.is_dir():
                args += [*_parents(path, made), "--ro-bind", name, name]
            continue
        target = path.resolve()
        if any(under(target, s) for s in shown):
            args += ["--symlink", os.readlink(path), name]
        elif target.is_dir():
            args += ["--ro-bind", str(target), name]
    return args


def _system_dirs(system: tuple[str, ...]) -> list[Path]:
    """Those of ``system`` that are directories here, not links."""
    return [Path(p) for p in system if os.path.isdir(p) and not os.path.islink(p)]


def _parents(path: Path, made: set[Path]) -> list[str]:
    """bubblewrap's arguments that make the directories above ``path`` (those not in ``made``, then added to it)
    searchable by every uid: bubblewrap makes them 0700, which a worker's own uid could not pass. (Below ``/tmp``,
    the template's own directory, each worker makes them itself: ``namespaces.enter``.)"""
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent not in made and parent != Path("/") and not under(parent, Path("/tmp")):
            made.add(parent)
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


# ---------------------------------------------------------------------------------------------------------------------
class _MappedTier(Tier):
    """A tier without a mount namespace: the session's ``/mnt/data`` and ``/tmp`` are real directories of the host,
    mapped for Python's file APIs, and its home and ``/tmp`` live in a scratch directory the host makes."""

    helpers = ("pathmap", "strays", *SECCOMP)

    def new_session(
        self, launcher: Launcher, guid: str, data_dir: Path, uid: int | None, limits: Rlimits, *, supervised: bool
    ) -> SessionPlan:
        scratch = self._make_scratch(launcher, guid, "home", "tmp")
        home, tmp = scratch / "home", scratch / "tmp"
        mapping = PathMapping(virtual={"/mnt/data": str(data_dir), "/tmp": str(tmp)},
                              own=[str(data_dir), str(scratch), *launcher.python_under_tmp])  # fmt: skip
        config = _worker_config(launcher, uid, limits, self.worker_policy(launcher, supervised=supervised),
                                data_dir=str(data_dir), whole_pid_namespace=False, namespaces=None,
                                confinement=self._confinement(launcher, [str(data_dir), str(scratch)]),
                                path_mapping=mapping)  # fmt: skip
        return SessionPlan(config, launcher.env(str(home), str(tmp)), scratch_dir=scratch)

    def _confinement(self, launcher: Launcher, own: list[str]) -> Confinement | None:
        return None


class LandlockTier(_MappedTier):
    name = "landlock"
    seccomp = policy.TierRules(name, sockets=False, sysv_ipc=False, guard_signals=True)
    choice = "landlock"
    label = "Landlock"
    description = "Landlock + seccomp sandbox"
    isolated = True
    helpers = ("pathmap", "confine", "policy")
    private_uids = True
    host_ends_session_processes = True  # seccomp keeps every process in the worker's session; no /proc inside
    workers_outlive_template = True

    @property
    def summary(self) -> str:
        abi = self.info()["landlockAbi"]
        return ("Landlock + seccomp (no network, no /proc, read-only system, writes only in the session's own "
                "directories; /mnt/data mapped for Python file APIs)" + (f", Landlock ABI {abi}" if abi else ""))  # fmt: skip

    @classmethod
    def _probe(cls) -> str | None:
        """Confine a throw-away process exactly as a worker is confined (as the worker's uid when we are root: the
        same seccomp policy, then Landlock) and check that it still finds the sandbox's packages but can no longer
        read ``/proc``, open a socket or reach its parent's scheduling."""
        if not sys.platform.startswith("linux"):
            return f"Landlock needs Linux (this is {sys.platform})"
        with tempfile.TemporaryDirectory(prefix="azure-sessions-landlock-probe-") as scratch:
            uid = UID_BASE + secrets.randbelow(UID_SPAN) if is_root() else None
            if uid is not None:
                os.chmod(scratch, 0o711)
            confinement = _confinement([scratch], python_paths())
            seccomp = cls.seccomp.scoped(_landlock_signal_scope())
            protected = sorted({os.getpid(), os.getpgid(0)}) if seccomp.guard_signals else []
            rules = _policy(seccomp, protected, supervised=False)
            spec = {"uid": uid, "policy": vars(rules), "confine": vars(confinement),
                    "helpers": {name: str(INSIDE_DIR / f"{name}.py") for name in ("confine", "policy")}}  # fmt: skip
            try:
                proc = subprocess.run([os.path.abspath(sys.executable), "-I", "-B", "-c", _LANDLOCK_PROBE,
                                       json.dumps(spec)], capture_output=True, text=True, timeout=30,
                                      env={"PATH": "/usr/bin:/bin"}, cwd=scratch)  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"the Landlock probe could not run: {exc}"
        lines = (proc.stdout.strip() or proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()
        return None if proc.returncode == 0 and lines[-1] == "ok" else lines[-1]

    def prepare_host(self) -> None:
        """Workers share this process's uid here: it becomes non-dumpable, so no process of the same user can read
        its memory or environment through ``/proc`` or attach to it."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")

    def info(self) -> dict[str, Any]:
        from .inside.confine import landlock_abi

        return {"landlockAbi": landlock_abi()}

    def _confinement(self, launcher: Launcher, own: list[str]) -> Confinement:
        return _confinement(own, launcher.python_paths)

    def signal_scope(self) -> bool:
        return _landlock_signal_scope()

    def check_ready(self, ready: Ready) -> str | None:
        return super().check_ready(ready) or (None if ready.confined else "the worker did not confine itself with "
                                              "Landlock")  # fmt: skip

    def end_cell_leftovers(self, worker_pid: int, since_ticks: int) -> set[int]:
        return strays.end_processes(strays.in_session(worker_pid, frozenset({worker_pid})),
                                    lambda pid, start: start >= since_ticks)  # fmt: skip

    def end_worker(self, proc: ForkedProcess) -> None:
        """Every process of the session: the worker and its process group first, with SIGKILL, then the rest of its
        session by rounds of SIGKILL. Nothing is stopped on the way, so nothing is left stopped if this process dies
        in between; what is left running then ends with the template (``inside/forkserver.py``), which reaps it."""
        _kill_group(proc)
        strays.end_processes(strays.in_session(proc.pid))
        _wait(proc)


def _confinement(read_write: list[str], python: list[Path]) -> Confinement:
    """``confine.confine``'s arguments for a Landlock worker whose own directories are ``read_write``, in the Python
    environment at ``python``."""
    return Confinement(read_only=[*SYSTEM_READ_ONLY, *(str(p) for p in python)], read_write=list(read_write),
                       devices=list(DEVICES))  # fmt: skip


def _landlock_signal_scope() -> bool:
    return landlock_abi() >= SIGNAL_SCOPE_ABI


_LANDLOCK_PROBE = """
import importlib.util, json, os, socket, sys
spec = json.loads(sys.argv[1])
def load(name):  # loaded first, as the template does
    loader = importlib.util.spec_from_file_location(name, spec["helpers"][name])
    module = importlib.util.module_from_spec(loader); loader.loader.exec_module(module)
    return module
confine, policy = load("confine"), load("policy")
problem = confine.landlock_problem()  # which layer refuses Landlock, if one does
if problem:
    print(problem); sys.exit(1)
if spec["uid"] is not None:
    os.setgroups([]); os.setresgid(spec["uid"], spec["uid"], spec["uid"]); os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if not os.access(sys.prefix, os.R_OK | os.X_OK):
        print(f"the unprivileged uid each worker of a root emulator gets cannot reach the Python environment "
              f"{sys.prefix} (a directory above it is closed to other users, as `mktemp -d` makes them)"); sys.exit(1)
rules = spec["policy"]
try:
    policy.install(policy.TierRules(rules["tier"], rules["sockets"], rules["sysv_ipc"], rules["guard_signals"]),
                   protected_pids=rules["protected_pids"])
    confine.confine(**spec["confine"])
except Exception as exc:
    print(f"the seccomp policy and Landlock could not be applied: {getattr(exc, 'strerror', None) or exc}"); sys.exit(1)
missing = [m for m in ("IPython", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    print(f"the confined worker cannot read its Python environment ({sys.prefix}): {', '.join(missing)} not found"); sys.exit(1)
for name, attempt in (("/proc", lambda: open("/proc/1/stat").read()), ("a socket", socket.socket),
                      ("its parent's scheduling", lambda: os.getpriority(os.PRIO_PROCESS, os.getppid()))):
    try:
        attempt(); print(f"the confined worker could still reach {name}"); sys.exit(1)
    except PermissionError:
        pass
print("ok")
"""


# ---------------------------------------------------------------------------------------------------------------------
class UnisolatedTier(_MappedTier):
    name = "unisolated"
    seccomp = policy.TierRules(name, sockets=True, sysv_ipc=False, guard_signals=True)
    choice = "none"
    label = "not isolated"
    description = "not isolated"
    isolated = False
    private_uids = False
    host_ends_session_processes = False  # the worker ends its descendants itself
    workers_outlive_template = True

    def __init__(self, reason: str) -> None:
        self.reason = reason  # why code runs unisolated

    @property
    def warning(self) -> str:
        return (
            "Code runs UNISOLATED on this machine: " + self.reason + ". Session code can read and write your files, "
            "use the network and see your processes. On Linux, install bubblewrap (e.g. `apt-get install "
            "bubblewrap`) where user namespaces work; elsewhere the Landlock tier needs a kernel with Landlock (Linux "
            "6.2 or newer, landlock among its LSMs) and a seccomp profile that allows the landlock_* system calls."
        )

    @property
    def summary(self) -> str:
        return f"NONE. {self.warning}"

    def end_worker(self, proc: ForkedProcess) -> None:
        """The worker's descendants too: there is no namespace or session to find them by when it is gone."""
        pids: set[int] = set()
        with contextlib.suppress(OSError):  # no /proc (not Linux): the process group is all there is to kill
            pids = strays.descendants(proc.pid, strays.process_table())
        _kill_group_and_wait(proc, also=pids)


def _policy(rules: policy.TierRules, protected_pids: list[int], *, supervised: bool) -> Policy:
    return Policy(tier=rules.tier, sockets=rules.sockets, sysv_ipc=rules.sysv_ipc, guard_signals=rules.guard_signals,
                  protected_pids=protected_pids, supervised=supervised)  # fmt: skip


def _worker_config(launcher: Launcher, uid: int | None, limits: Rlimits, policy: Policy | None, *, data_dir: str,
                   whole_pid_namespace: bool, namespaces: Namespaces | None, confinement: Confinement | None,
                   path_mapping: PathMapping | None) -> WorkerConfig:  # fmt: skip
    image_mb = launcher.limits.image_mb
    return WorkerConfig(uid=uid, gid=uid, limits=limits, nice=launcher.limits.nice, data_dir=data_dir,
                        max_stream_bytes=MAX_STREAM_BYTES, max_result_chars=MAX_RESULT_CHARS,
                        max_image_bytes=image_mb << 20 if image_mb else MAX_IMAGE_BYTES,
                        whole_pid_namespace=whole_pid_namespace, namespaces=namespaces, policy=policy,
                        confinement=confinement, path_mapping=path_mapping)  # fmt: skip


def _kill_group_and_wait(proc: ForkedProcess, also: set[int] = frozenset()) -> None:
    """SIGKILL to the worker's process group (bubblewrap: its sandbox dies with it, a PID namespace), to ``also``,
    to the worker; then wait for it."""
    _kill_group(proc, also)
    _wait(proc)


def _kill_group(proc: ForkedProcess, also: set[int] = frozenset()) -> None:
    """SIGKILL to the worker's process group, to ``also`` and to the worker (through its pidfd)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in also:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _wait(proc: ForkedProcess) -> None:
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------------------
ISOLATING: tuple[type[Tier], ...] = (BubblewrapTier, LandlockTier)
"""The isolating tiers, strongest first: what ``auto`` tries in turn."""
AUTO = "auto"
CHOICES = (AUTO, *(tier.choice for tier in ISOLATING), UnisolatedTier.choice)
"""What a user may ask for: ``auto`` takes the strongest tier that works here; ``none`` runs unisolated on purpose."""


def tier_for_choice(choice: str) -> type[Tier]:
    """The tier class a choice other than ``auto`` requires (not probed)."""
    for tier in (*ISOLATING, UnisolatedTier):
        if tier.choice == choice:
            return tier
    raise ValueError(f"no tier is chosen by {choice!r}; the choices are {CHOICES}")


def resolve_tier(choice: str, refuse_unisolated: bool = False) -> Tier:
    """The tier the user's choice gives on this host.

    ``auto`` takes the strongest isolating tier that works here, else runs unisolated with a warning, or, with
    ``refuse_unisolated`` (a server strangers can reach), raises ``SandboxUnavailable`` saying why and what to do; an
    isolating tier's own choice requires that tier; ``none`` runs unisolated on purpose.
    """
    if choice not in CHOICES:
        raise ValueError(f"sandbox must be one of {CHOICES}, not {choice!r}")
    if choice == UnisolatedTier.choice:
        return UnisolatedTier(f"sandboxing was turned off (sandbox={choice!r})")
    problems: list[str] = []
    for tier in ISOLATING:
        if choice not in (tier.choice, AUTO):
            continue
        problem = tier.problem()
        if problem is None:
            return tier()
        if choice == tier.choice:
            raise SandboxUnavailable(f"sandbox={choice!r} was requested but {problem}")
        problems.append(f"{tier.label} is unavailable: {problem}")
    why = "; ".join(problems)
    if refuse_unisolated:
        raise SandboxUnavailable(
            f"No isolation tier works on this host ({why}). Unisolated code would run next to this server's secrets "
            "and files for anyone who can reach it, so no code is run. Configure an Azure dynamic-sessions pool "
            "(AZURE_SESSIONS_POOL_ENDPOINT) for real isolation, or choose the sandbox 'none' on purpose if everyone "
            "who can reach this server may run code on it."
        )
    return UnisolatedTier(why)
