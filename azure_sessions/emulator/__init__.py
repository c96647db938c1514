"""A local emulator of the Azure Container Apps dynamic-sessions data-plane API (Python code-interpreter pools).

    from azure_sessions.emulator import start_emulator
    with start_emulator(token="t") as emu:
        print(emu.endpoint)      # use it as the pool management endpoint, with "Authorization: Bearer t"

It speaks both wire dialects (2024-02-02/08-02 "envelope" and 2024-10-02+ "resource"), runs each session in a
persistent IPython worker in the strongest isolation tier the host allows (bubblewrap, else Landlock and seccomp, else
a loudly labelled unisolated fallback) and serves over uvicorn on loopback. Needs the ``emulator`` extra. See
``azure-sessions-emulator --help`` (or ``python -m azure_sessions.emulator --help``).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._extras import missing_extra
from .budgets import SessionBudget
from .faults import ENV_RULES, ENV_SEED, FaultInjector, FaultRule, parse_rules
from .files import MAX_UPLOAD_BYTES, iso_time
from .inside.strays import read_stat
from .launcher import Launcher, Limits
from .sessions import EmulatedPool
from .tiers import SandboxUnavailable, Tier, resolve_tier
from .watchdog import Usage
from .workers import WorkerPool

__all__ = [
    "MAX_UPLOAD_BYTES",
    "Counters",
    "EmulatorHandle",
    "FaultRule",
    "Limits",
    "SandboxUnavailable",
    "SessionBudget",
    "SessionView",
    "Tier",
    "Usage",
    "start_emulator",
]

log = logging.getLogger("azure_sessions.emulator")

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "local-rg"
POOL_NAME = "local-pool"
OWNER_FILE = "owner"
EMULATOR_MODULES = ("fastapi", "uvicorn", "python_multipart", "IPython")
"""What the emulator cannot run without: its HTTP server and the sandbox's Python shell (the ``emulator`` extra)."""


@dataclass(frozen=True)
class SessionView:
    """A session's worker as it is now, seen from outside (for tests, benchmarks and operators)."""

    identifier: str
    guid: str  # the session id the service reports (``x-ms-session-guid``): a new one for each new worker
    worker_pid: int  # as this process sees it
    alive: bool
    data_dir: Path  # its /mnt/data on the host
    scratch_dir: Path  # its /tmp on the host (and its home, or under bubblewrap its /dev/shm), in every tier
    uid: int | None  # its private uid (a root emulator's isolating tiers), else None: this process's


@dataclass(frozen=True)
class Counters:
    """What an emulator has done since it started."""

    sessions: int  # live now
    sessions_created: int
    sessions_expired: int  # by their cooldown or a forced expiry
    executions: int
    cold_starts: int  # workers started on demand because no pre-started one was ready


class EmulatorHandle:
    """A running emulator. ``stop()`` (or leaving the ``with`` block) kills every worker and removes its files.

    Besides its address (``endpoint``, ``base_url``), it tells what runs the sessions: ``tier`` (a
    :class:`~azure_sessions.emulator.tiers.Tier`: ``name``, ``label``, ``description``, ``isolated``, ``warning``),
    and lets a test or a benchmark look at them without reaching into the emulator's parts: ``session()``,
    ``sessions()``, ``usage()`` (against ``budget``), ``template_pid``, ``counters()``, ``execution_log()``.
    ``backend`` is the
    :class:`~azure_sessions.emulator.sessions.EmulatedPool` itself, the emulator's state without HTTP.
    """

    def __init__(self, *, server: Any, thread: threading.Thread, pool: EmulatedPool, workers: WorkerPool,
                 faults: FaultInjector, host: str, port: int, token: str | None, tier: Tier, root: Path,
                 info: dict[str, Any]) -> None:  # fmt: skip
        self._server = server
        self._thread = thread
        self.backend = pool
        self._workers = workers
        self.faults = faults
        self.host = host
        self.port = port
        self.token = token
        self.tier = tier
        self.landlock_abi: int | None = info.get("landlockAbi")  # the kernel's Landlock ABI, in the Landlock tier
        self.data_root = root
        self._stopped = False
        self._stop_lock = threading.Lock()
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{port}"
        self.endpoint = (
            f"{self.base_url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/sessionPools/{POOL_NAME}"
        )

    # -- what runs the sessions ------------------------------------------------------------------------------------
    @property
    def sandbox_mode(self) -> str:
        """The tier's name: ``bubblewrap``, ``landlock`` or ``unisolated``."""
        return self.tier.name

    @property
    def isolated(self) -> bool:
        return self.tier.isolated

    @property
    def isolation_warning(self) -> str | None:
        """What a user must be told before running code here (None in an isolating tier)."""
        return self.tier.warning

    @property
    def instance_id(self) -> str:
        """This emulator's id, in every worker's environment (``AZURE_SESSIONS_EMULATOR_INSTANCE``)."""
        return self._workers.launcher.instance_id

    @property
    def prestart(self) -> int:
        """How many pre-started workers it keeps ready."""
        return self._workers.size

    @property
    def template_pid(self) -> int | None:
        """The pid of the template every worker is forked from (None while there is none)."""
        return self._workers.launcher.template_pid

    def wait_for_pool(self, timeout: float = 60.0) -> bool:
        """Block until all pre-started workers are ready (benchmarks call this before measuring)."""
        return self._workers.wait_full(timeout)

    def wait_for_template(self, timeout: float = 120.0) -> bool:
        """Block until a template is ready to fork workers (a new one if it died)."""
        return self._workers.launcher.wait_template(timeout)

    # -- its sessions ----------------------------------------------------------------------------------------------
    def session(self, identifier: str) -> SessionView:
        """The session ``identifier``'s worker; LookupError when there is no such session, or it has no worker."""
        found = next((s for s in self.backend.list_sessions() if s.identifier == identifier), None)
        view = _view(found) if found is not None else None
        if view is None:
            raise LookupError(f"no session {identifier!r} with a worker in this emulator")
        return view

    def sessions(self) -> list[SessionView]:
        """Every session that has a worker, oldest first."""
        return [view for s in self.backend.list_sessions() if (view := _view(s)) is not None]

    @property
    def budget(self) -> SessionBudget:
        """What each session may hold of the machine (``Limits``' per-session fields)."""
        return self._workers.launcher.guards.budget

    def usage(self, identifier: str) -> Usage:
        """What the session ``identifier`` held at the watchdog's last measurement (every 0.25 s: its tasks and
        memory; its disk every 1.5 s while it runs code, every 10 s when idle); LookupError when there is no such
        session, or its worker is not ready."""
        found = next((s for s in self.backend.list_sessions() if s.identifier == identifier), None)
        worker = found.worker if found is not None else None
        usage = worker.usage() if worker is not None else None
        if usage is None:
            raise LookupError(f"no session {identifier!r} with a ready worker in this emulator")
        return usage

    def session_identifiers(self) -> list[str]:
        """Every session's identifier, with a worker or not yet, oldest first."""
        return [s.identifier for s in self.backend.list_sessions()]

    def counters(self) -> Counters:
        stats = self.backend.stats()
        return Counters(sessions=stats["sessions"], sessions_created=stats["sessionsCreated"],
                        sessions_expired=stats["sessionsExpired"], executions=stats["executionsTotal"],
                        cold_starts=self._workers.cold_starts)  # fmt: skip

    def execution_count(self, identifier: str | None = None) -> int:
        """Executions run so far (of one identifier's sessions: among the log's latest 20,000; or all)."""
        return self.backend.execution_count(identifier)

    def execution_log(self) -> list[dict[str, Any]]:
        """The latest 20,000 executions, oldest first: ``id``, ``identifier``, ``sessionGuid``, ``code`` (its first
        4,000 characters), ``startedAt``."""
        return [dict(entry) for entry in list(self.backend.execution_log)]

    # -- behaviour a test may change -------------------------------------------------------------------------------
    @property
    def interruptible(self) -> bool:
        """Whether the interrupt route works (False: it answers like the service, which has no such operation)."""
        return self.backend.interruptible

    @interruptible.setter
    def interruptible(self, value: bool) -> None:
        self.backend.interruptible = value

    @property
    def live_output(self) -> bool:
        """Whether the live-output route works (False: it answers like the service, which streams nothing)."""
        return self.backend.live_output

    @live_output.setter
    def live_output(self, value: bool) -> None:
        self.backend.live_output = value

    @property
    def interrupt_grace(self) -> float:
        """Seconds an interrupted cell has to stop before its worker is killed."""
        return self.backend.interrupt_grace

    @interrupt_grace.setter
    def interrupt_grace(self, value: float) -> None:
        self.backend.interrupt_grace = value

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._stopped and self._thread.is_alive()

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.should_exit = True
        self.backend.close()
        self._thread.join(timeout=15)
        shutil.rmtree(self.data_root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        token = "set" if self.token else "none"
        return f"EmulatorHandle(endpoint={self.endpoint!r}, sandbox={self.sandbox_mode!r}, token={token})"


def _view(session: Any) -> SessionView | None:
    worker = session.worker
    if worker is None:
        return None
    return SessionView(identifier=session.identifier, guid=worker.guid, worker_pid=worker.pid, alive=worker.alive,
                       data_dir=worker.data_dir, scratch_dir=worker.scratch_dir, uid=worker.uid)  # fmt: skip


def is_loopback(host: str) -> bool:
    """``host`` names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    cooldown: float = 300.0,
    max_sessions: int = 100,
    data_root: str | os.PathLike | None = None,
    prestart: int = 2,
    sandbox: str = "auto",
    faults: str | list[str | dict | FaultRule] | None = None,
    *,
    limits: Limits | None = None,
    fault_seed: int | None = None,
    interrupt_grace: float = 3.0,
    log_level: str = "warning",
    refuse_unisolated: bool = False,
    pool_full_status: int = 404,
) -> EmulatorHandle:
    """Start the emulator in a background thread and return once it is serving.

    ``token``: the one accepted bearer token (None: any non-empty bearer). Binding a non-loopback ``host`` without a
    token is refused. ``data_root``: where session directories live (a private temp dir by default; a fresh
    sub-directory otherwise; removed by ``stop()``). ``sandbox``: "auto" (the strongest tier that works here) |
    "bubblewrap" | "landlock" (require that tier) | "none" (unisolated on purpose). ``refuse_unisolated``: raise
    ``SandboxUnavailable`` rather than fall back to running code unisolated when ``sandbox="auto"`` finds no tier
    (for servers that strangers can reach); ``sandbox="none"`` is still honoured. ``faults``: fault rules (see
    ``faults.py``); None reads ``AZURE_SESSIONS_EMULATOR_FAULTS``. ``pool_full_status``: how a new identifier is
    refused when ``max_sessions`` are in use: 404 (what Microsoft Learn documents) or 429 (what a production pool
    was seen to answer).

    In the Landlock tier this process makes itself non-dumpable (``PR_SET_DUMPABLE``), so processes of the same
    user cannot read its memory or environment through ``/proc`` or attach to it (``Tier.prepare_host``).
    """
    problem = missing_extra("emulator", "The emulator", EMULATOR_MODULES)
    if problem is not None:
        raise problem
    from .api import AppState, create_app

    _refuse_open_without_token(host, token)
    tier = _enter_tier(sandbox, refuse_unisolated)
    instance = uuid.uuid4().hex[:12]
    root = _make_root(data_root, instance)
    try:
        injector = _fault_injector(faults, fault_seed)
        launcher = Launcher(tier, root, limits, instance, max_sessions=max_sessions)
        workers = WorkerPool(launcher, prestart)
        pool = EmulatedPool(workers, cooldown=cooldown, max_sessions=max_sessions, interrupt_grace=interrupt_grace,
                            pool_full_status=pool_full_status)  # fmt: skip
        info = _instance_info(tier, launcher)
        state = AppState(pool=pool, token=token, faults=injector, staging_dir=root / "staging", info=info)
        server, thread = _server(create_app(state), host, port, log_level)
        workers.start()
        pool.start()
        bound_port = _serve(server, thread, pool, f"{host}:{port}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    handle = EmulatorHandle(server=server, thread=thread, pool=pool, workers=workers, faults=injector, host=host,
                            port=bound_port, token=token, tier=tier, root=root, info=info)  # fmt: skip
    atexit.register(handle.stop)
    return handle


def _refuse_open_without_token(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise ValueError(
            f"Refusing to serve on the non-loopback address {host!r} without a token: anyone who can reach it could "
            "run code on this machine. Pass token=... (--token) or bind 127.0.0.1."
        )


def _enter_tier(sandbox: str, refuse_unisolated: bool) -> Tier:
    """The isolation tier to run workers in (its warning logged), and what this process does for it."""
    tier = resolve_tier(sandbox, refuse_unisolated)
    if tier.warning:
        log.warning("%s", tier.warning)
    tier.prepare_host()
    return tier


def _make_root(data_root: str | os.PathLike | None, instance: str) -> Path:
    """This instance's own directory (a private temp dir, or a fresh one under ``data_root``), stamped with its
    owner so that a later emulator can remove it if this one dies without ``stop()``."""
    if data_root is None:
        _sweep_stale(Path(tempfile.gettempdir()), "azure-sessions-emulator-")
        root = Path(tempfile.mkdtemp(prefix=f"azure-sessions-emulator-{instance}-"))
    else:
        _sweep_stale(Path(data_root).resolve(), "emulator-")
        root = Path(data_root).resolve() / f"emulator-{instance}"
        root.mkdir(parents=True, mode=0o711)
    os.chmod(root, 0o711)
    (root / OWNER_FILE).write_text(_owner_stamp(os.getpid()))
    return root


def _fault_injector(faults: str | list[str | dict | FaultRule] | None, seed: int | None) -> FaultInjector:
    """The given fault rules and seed, else those of the environment."""
    rules = parse_rules(faults if faults is not None else os.environ.get(ENV_RULES))
    return FaultInjector(rules, seed if seed is not None else _int_or_none(os.environ.get(ENV_SEED)))


def _instance_info(tier: Tier, launcher: Launcher) -> dict[str, Any]:
    """What ``.emulator/info`` says about this instance (its statistics are added on each request)."""
    return {
        "emulator": "azure-sessions-emulator",
        "sandboxMode": tier.name,
        "isolated": tier.isolated,
        "isolationWarning": tier.warning,
        "startedAt": iso_time(time.time()),
        "limits": asdict(launcher.limits),
        "sessionBudget": {**launcher.guards.info(), "taskCap": launcher.task_cap},
        "preloadedModules": launcher.preload,
        **tier.info(),
    }


def _server(app: Any, host: str, port: int, log_level: str) -> tuple[Any, threading.Thread]:
    """A uvicorn server for ``app`` and the thread that will run it (not started)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=3, timeout_keep_alive=120, ws="none")  # fmt: skip
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server, threading.Thread(target=server.run, name="emulator-server", daemon=True)


def _serve(server: Any, thread: threading.Thread, pool: EmulatedPool, address: str) -> int:
    """Start serving and return the bound port once the server listens (closing ``pool`` if it cannot)."""
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pool.close()
            raise RuntimeError(f"the emulator could not start serving on {address}")
        time.sleep(0.005)
    return server.servers[0].sockets[0].getsockname()[1]


def _owner_stamp(pid: int) -> str:
    """``pid start-time``: identifies the owning process even if its pid is later reused."""
    stat = read_stat(pid)
    return f"{pid} {stat.start}" if stat is not None else str(pid)


def _sweep_stale(parent: Path, prefix: str) -> None:
    """Remove directories left by emulators whose process died without stop() (e.g. killed with SIGKILL)."""
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix) and (p / OWNER_FILE).is_file()]
    except OSError:
        return
    for path in candidates:
        try:
            stamp = (path / OWNER_FILE).read_text().strip()
            pid = int(stamp.split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _owner_stamp(pid) == stamp and _pid_alive(pid):
            continue
        log.info("removing %s, left behind by emulator process %s", path, pid)
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
