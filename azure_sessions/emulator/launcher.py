"""How a session's worker process starts: the one place where the host makes a new session's worker.

A :class:`Launcher` belongs to one emulator instance: its directories, the Python environment its workers run, a
private uid per worker (a root emulator), the template every worker is forked from (``template.py``), and the
tier (``tiers.py``) that decides the template's command and each worker's configuration.

Every worker runs the interpreter this process runs (a venv's own ``bin/python``), so the sandbox has exactly this
environment's packages, whatever the machine's default Python holds.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class Limits:
    """Per-worker resource limits (``None`` = no limit). Applied with setrlimit before any user code runs."""

    memory_mb: int | None = 4096
    cpu_seconds: int | None = 3600
    max_processes: int | None = 256
    file_size_mb: int | None = 1024

    def as_rlimits(self, extra_processes: int = 0) -> Rlimits:
        mib = 1024 * 1024
        return Rlimits(
            memory_bytes=self.memory_mb * mib if self.memory_mb else None,
            cpu_seconds=self.cpu_seconds,
            max_processes=self.max_processes + extra_processes if self.max_processes else None,
            file_size_bytes=self.file_size_mb * mib if self.file_size_mb else None,
            core_bytes=0,
        )


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class Launcher:
    """Builds and starts worker processes for one emulator instance, under ``root`` (removed by the owner)."""

    def __init__(self, tier: Tier, root: Path, limits: Limits | None = None, instance_id: str = "") -> None:
        self.tier = tier
        self.root = root
        self.limits = limits or Limits()
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
        guid = str(uuid.uuid4())
        data_dir = self.sessions_dir / guid
        data_dir.mkdir(mode=0o700)
        uid = UID_BASE + next(self._uids) % UID_SPAN if self._drop_uid else None
        # RLIMIT_NPROC counts every process of the (host) uid: a private uid per worker when we run as root; our
        # current count plus the allowance otherwise; root that keeps its uid is exempt from it.
        own = 0 if uid is not None or is_root() or not self.limits.max_processes else _count_own_processes()
        limits = self.limits.as_rlimits(extra_processes=own)
        if uid is None and is_root():
            limits = dataclasses.replace(limits, max_processes=None)
        plan = self.tier.new_session(self, guid, data_dir, uid, limits)
        if uid is not None:
            for path in (data_dir, plan.scratch_dir, *plan.scratch_dir.iterdir()):
                os.chown(path, uid, uid)
        proc = fork_worker(self._ensure_template(), plan.config, plan.env,
                           outlives_template=self.tier.workers_outlive_template)  # fmt: skip
        return Spawned(proc, guid, data_dir, plan.scratch_dir, uid, self.tier)


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
