"""How a session's worker process starts: the one place where the host makes a new session's worker.

A :class:`Launcher` belongs to one emulator instance: its directories, the Python environment its workers run, a
private uid per worker (a root emulator), the template every worker is forked from (``template.py``), the tier
(``tiers.py``) that decides the template's command and each worker's configuration, and the guards that hold every
session to its budget (``guards.py``).

Every worker runs the interpreter this process runs (a venv's own ``bin/python``), so the sandbox has exactly this
environment's packages, whatever the machine's default Python holds.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import site
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from .budgets import SessionBudget
from .guards import SessionGuards
from .inside.protocol import Rlimits
from .template import TemplateProcess, fork_worker
from .workers import Spawned, WorkerProcess

if TYPE_CHECKING:
    from .tiers import Tier

log = logging.getLogger("azure_sessions.emulator")

INSIDE_DIR = Path(__file__).with_name("inside")
"""The in-sandbox files: the template runs ``main.py`` there, by its path."""
PRELOAD_CANDIDATES = ("numpy", "pandas", "matplotlib.pyplot")
UID_BASE, UID_SPAN = 610_000, 100_000
"""The private uids a root emulator gives its workers."""
CEILING_MARGIN = 256
"""Tasks of the workers' shared uid allowed beyond its count at start and the sessions' budgets: the server's and
the template's own threads come and go (README: "What a session gets")."""


@dataclass(frozen=True)
class Limits:
    """What a session may use (``None`` = no limit): per process (rlimits, set before any user code runs) and per
    session (``budgets.SessionBudget``, held by the watchdog). README, "What a session gets", says who enforces each
    and what happens past it."""

    memory_mb: int | None = 4096  # address space per process (RLIMIT_AS)
    cpu_seconds: int | None = 3600  # CPU time per process (RLIMIT_CPU)
    max_processes: int | None = SessionBudget.tasks  # processes and threads per session
    file_size_mb: int | None = 1024  # per file (RLIMIT_FSIZE)
    image_mb: int | None = 32  # the image a cell returns, as PNG: past it the result leaves it out and says so
    session_memory_mb: int | None = SessionBudget.memory_mb  # summed over the session's processes
    session_disk_mb: int | None = SessionBudget.disk_mb  # /mnt/data and the scratch directory (/tmp) together
    nice: int = SessionBudget.nice  # added to every session process's nice value, and its scheduling group's
    exact_process_cap: bool = False  # max_processes answered at fork time (EAGAIN) by the process supervisor

    def budget(self) -> SessionBudget:
        return SessionBudget(tasks=self.max_processes, memory_mb=self.session_memory_mb,
                             disk_mb=self.session_disk_mb, nice=self.nice)  # fmt: skip

    def as_rlimits(self, max_processes: int | None) -> Rlimits:
        """The worker's rlimits, with ``max_processes`` as its ``RLIMIT_NPROC`` (which counts a whole uid)."""
        mib = 1024 * 1024
        return Rlimits(
            memory_bytes=self.memory_mb * mib if self.memory_mb else None,
            cpu_seconds=self.cpu_seconds,
            max_processes=max_processes,
            file_size_bytes=self.file_size_mb * mib if self.file_size_mb else None,
            core_bytes=0,
        )


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class Launcher:
    """Builds and starts worker processes for one emulator instance, under ``root`` (removed by the owner)."""

    def __init__(self, tier: Tier, root: Path, limits: Limits | None = None, instance_id: str = "",
                 max_sessions: int = 100) -> None:  # fmt: skip
        self.tier = tier
        self.root = root
        self.limits = limits or Limits()
        self.max_sessions = max_sessions
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.sessions_dir = root / "sessions"
        self.logs_dir = root / "logs"  # the template's (a worker's log is a pipe: workers.py, LogTail)
        self.scratch_root = root / "scratch"
        for path in (self.sessions_dir, self.logs_dir, self.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
        # The interpreter as invoked, not its resolved target: a venv's bin/python is a link to the base
        # interpreter, and only the link's location makes Python read pyvenv.cfg and use the venv's packages.
        self.python = os.path.abspath(sys.executable)
        self.preload = [name for name in PRELOAD_CANDIDATES if _installed(name)]
        # The Python environment below /tmp (a checkout in a temporary directory): kept out of each session's /tmp.
        self.python_paths = python_paths()
        self.python_under_tmp = [str(p) for p in self.python_paths if under(p, Path("/tmp"))]
        self._drop_uid = tier.private_uids and is_root()
        self._uids = itertools.count(secrets.randbelow(UID_SPAN))  # distinct per instance, most likely
        self._shared_uid_ceiling: int | None = None  # counted at the first spawn
        self.guards = SessionGuards(self.limits.budget(), exact_process_cap=self.limits.exact_process_cap)
        self._spawner_lock = threading.Lock()
        self._spawner: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="emulator-spawner")
        # Every worker is forked from one prepared template (template.py), then made this session's (namespaces,
        # limits, confinement) before it runs user code.
        self._template: TemplateProcess | None = None

    def env(self, home: str, tmp: str) -> dict[str, str]:
        """A worker's whole environment (nothing of this process's)."""
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

    def start_worker(self) -> WorkerProcess:
        """Start a new session's worker (not yet ready: see ``WorkerProcess.wait_ready``). Every worker of the
        emulator is made here: what must watch a worker for its whole life is attached here too.

        Every process is forked from one long-lived thread: bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires
        when the forking *thread* exits, which would kill workers started from short-lived request threads."""
        with self._spawner_lock:
            if self._spawner is None:
                raise RuntimeError("the launcher is closed")
            future = self._spawner.submit(self._spawn)
        return WorkerProcess(future.result())

    def close(self) -> None:
        """Stop the spawner thread and the template (after the owner killed the workers)."""
        with self._spawner_lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.shutdown(wait=True)
        if self._template is not None:
            self._template.close()
        self.guards.close()

    @property
    def task_cap(self) -> str:
        """What holds a session to its task budget: ``exact`` (the process supervisor), ``uid`` (each worker's private
        uid and its ``RLIMIT_NPROC``), else ``watchdog``."""
        if self.guards.supervisor is not None:
            return "exact"
        return "uid" if self._drop_uid else "watchdog"

    def protected_pids(self) -> list[int]:
        """What no session may signal: the server's process and process group, and the template."""
        template = self.template_pid
        return sorted({os.getpid(), os.getpgid(0), *([template] if template else [])})

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

    def wait_template(self, timeout: float) -> bool:
        """Block until a template is ready (started now if there is none); False if not within ``timeout``."""
        with self._spawner_lock:
            if self._spawner is None:
                return False
            future = self._spawner.submit(self._ensure_template)
        try:
            future.result(timeout)
        except Exception:
            return False
        return True

    def _ensure_template(self) -> TemplateProcess:
        if self._template is None or not self._template.alive:
            if self._template is not None:
                log.warning("the sandbox template stopped; starting a new one")
                self._template.close()
            home = self.root / "template"
            for path in (home, home / "home", home / "tmp"):
                path.mkdir(mode=0o700, exist_ok=True)
            command, env = self.tier.template_command(self, home)
            self._template = TemplateProcess(command, env, self.logs_dir / "template.log", home,
                                             helpers=list(self.tier.helpers), preload=self.preload)  # fmt: skip
        return self._template

    def _spawn(self) -> Spawned:
        """A new session's worker, forked from the template: its directories, its uid and limits, then its tier's
        configuration and environment."""
        template = self._ensure_template()
        guid = str(uuid.uuid4())
        data_dir = self.sessions_dir / guid
        data_dir.mkdir(mode=0o700)
        uid = UID_BASE + next(self._uids) % UID_SPAN if self._drop_uid else None
        limits = self.limits.as_rlimits(self._process_limit(uid))
        channel = self.guards.supervisor_channel()
        plan = self.tier.new_session(self, guid, data_dir, uid, limits, supervised=channel is not None)
        if uid is not None:
            for path in (data_dir, plan.scratch_dir, *plan.scratch_dir.iterdir()):
                os.chown(path, uid, uid)
        try:
            proc = fork_worker(template, plan.config, plan.env, outlives_template=self.tier.workers_outlive_template,
                               extra_fds=[channel[1].fileno()] if channel else [])  # fmt: skip
        finally:
            if channel is not None:
                channel[1].close()
        if channel is not None:
            self.guards.supervise(guid, channel[0], session_id=proc.pid)  # it has set its session id to its pid
        return Spawned(proc, guid, data_dir, plan.scratch_dir, uid, self.tier, self.guards)

    def _process_limit(self, uid: int | None) -> int | None:
        """A worker's ``RLIMIT_NPROC``, which counts every task of its uid: the session's budget where the worker has
        a private uid; where workers share this process's uid, a ceiling on them all (the uid's tasks at the first
        spawn, every session's budget, a margin), below which the watchdog holds each session to its own budget
        (the template keeps its own limit, so it forks new workers whatever sessions do); none for root, whom the
        kernel exempts."""
        tasks = self.limits.max_processes
        if uid is not None or tasks is None:
            return tasks
        if is_root():
            return None
        if self._shared_uid_ceiling is None:
            self._shared_uid_ceiling = _count_own_processes() + self.max_sessions * tasks + CEILING_MARGIN
        return self._shared_uid_ceiling


def _installed(module: str) -> bool:
    try:
        return find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def python_paths() -> list[Path]:
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
    return [p for i, p in enumerate(paths) if not any(under(p, q) for q in paths[:i])]


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
