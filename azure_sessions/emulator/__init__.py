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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._extras import missing_extra
from .faults import ENV_RULES, ENV_SEED, FaultInjector, FaultRule, parse_rules
from .files import MAX_UPLOAD_BYTES, iso_time
from .sandbox import Limits, SandboxUnavailable
from .sessions import EmulatedPool
from .strays import read_stat

__all__ = ["MAX_UPLOAD_BYTES", "EmulatorHandle", "FaultRule", "Limits", "SandboxUnavailable", "start_emulator"]

log = logging.getLogger("azure_sessions.emulator")

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "local-rg"
POOL_NAME = "local-pool"
OWNER_FILE = "owner"
EMULATOR_MODULES = ("fastapi", "uvicorn", "python_multipart", "IPython")
"""What the emulator cannot run without: its HTTP server and the sandbox's Python shell (the ``emulator`` extra)."""


class EmulatorHandle:
    """A running emulator. ``stop()`` (or leaving the ``with`` block) kills every worker and removes its files."""

    def __init__(self, *, server: Any, thread: threading.Thread, pool: EmulatedPool, faults: FaultInjector,
                 host: str, port: int, token: str | None, sandbox_mode: str, isolation_warning: str | None,
                 root: Path, remove_root: Path) -> None:  # fmt: skip
        self._server = server
        self._thread = thread
        self.backend = pool
        self.faults = faults
        self.host = host
        self.port = port
        self.token = token
        self.sandbox_mode = sandbox_mode
        self.isolated = sandbox_mode != "unisolated"
        self.isolation_warning = isolation_warning
        self.landlock_abi: int | None = None  # the kernel's Landlock ABI, in the Landlock tier
        self.data_root = root
        self._remove_root = remove_root
        self._stopped = False
        self._stop_lock = threading.Lock()
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{port}"
        self.endpoint = (
            f"{self.base_url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/sessionPools/{POOL_NAME}"
        )

    def wait_for_pool(self, timeout: float = 60.0) -> bool:
        """Block until all pre-started workers are ready (benchmarks call this before measuring)."""
        return self.backend.workers.wait_full(timeout)

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
        shutil.rmtree(self._remove_root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        token = "set" if self.token else "none"
        return f"EmulatorHandle(endpoint={self.endpoint!r}, sandbox={self.sandbox_mode!r}, token={token})"


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
) -> EmulatorHandle:
    """Start the emulator in a background thread and return once it is serving.

    ``token``: the one accepted bearer token (None: any non-empty bearer). Binding a non-loopback ``host`` without a
    token is refused. ``data_root``: where session directories live (a private temp dir by default; a fresh
    sub-directory otherwise; removed by ``stop()``). ``sandbox``: "auto" (the strongest tier that works here) |
    "bubblewrap" | "landlock" (require that tier) | "none" (unisolated on purpose). ``refuse_unisolated``: raise
    ``SandboxUnavailable`` rather than fall back to running code unisolated when ``sandbox="auto"`` finds no tier
    (for servers that strangers can reach); ``sandbox="none"`` is still honoured. ``faults``: fault rules (see
    ``faults.py``); None reads ``AZURE_SESSIONS_EMULATOR_FAULTS``.

    In the Landlock tier this process makes itself non-dumpable (``PR_SET_DUMPABLE``), so processes of the same
    user cannot read its memory or environment through ``/proc`` or attach to it.
    """
    problem = missing_extra("emulator", "The emulator", EMULATOR_MODULES)
    if problem is not None:
        raise problem
    import uvicorn

    from .api import AppState, create_app
    from .confine import landlock_abi
    from .sandbox import Launcher, resolve_mode
    from .workers import WorkerPool

    if not token and not is_loopback(host):
        raise ValueError(
            f"Refusing to serve on the non-loopback address {host!r} without a token: anyone who can reach it could "
            "run code on this machine. Pass token=... (--token) or bind 127.0.0.1."
        )
    mode, warning = resolve_mode(sandbox, refuse_unisolated)
    if warning:
        log.warning("%s", warning)
    if mode == "landlock":
        _make_undumpable()
    instance = uuid.uuid4().hex[:12]
    if data_root is None:
        _sweep_stale(Path(tempfile.gettempdir()), "azure-sessions-emulator-")
        root = Path(tempfile.mkdtemp(prefix=f"azure-sessions-emulator-{instance}-"))
    else:
        _sweep_stale(Path(data_root).resolve(), "emulator-")
        root = Path(data_root).resolve() / f"emulator-{instance}"
        root.mkdir(parents=True, mode=0o711)
    remove_root = root
    os.chmod(root, 0o711)
    (root / OWNER_FILE).write_text(_owner_stamp(os.getpid()))
    try:
        rules = parse_rules(faults if faults is not None else os.environ.get(ENV_RULES))
        seed = fault_seed if fault_seed is not None else _int_or_none(os.environ.get(ENV_SEED))
        injector = FaultInjector(rules, seed)
        launcher = Launcher(mode, root, limits, instance)
        workers = WorkerPool(launcher, prestart)
        pool = EmulatedPool(workers, cooldown=cooldown, max_sessions=max_sessions,
                                   interrupt_grace=interrupt_grace)  # fmt: skip
        started_at = iso_time(time.time())
        info = {
            "emulator": "azure-sessions-emulator",
            "sandboxMode": mode,
            "isolated": mode != "unisolated",
            "isolationWarning": warning,
            "startedAt": started_at,
            "limits": asdict(launcher.limits),
            "preloadedModules": launcher.preload,
            "landlockAbi": landlock_abi() if mode == "landlock" else None,
        }
        state = AppState(pool=pool, token=token, faults=injector, staging_dir=root / "staging", info=info)
        app = create_app(state)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, timeout_keep_alive=120, ws="none")  # fmt: skip
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        thread = threading.Thread(target=server.run, name="emulator-server", daemon=True)
        workers.start()
        pool.start()
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pool.close()
                raise RuntimeError(f"the emulator could not start serving on {host}:{port}")
            time.sleep(0.005)
        bound_port = server.servers[0].sockets[0].getsockname()[1]
    except BaseException:
        shutil.rmtree(remove_root, ignore_errors=True)
        raise
    handle = EmulatorHandle(server=server, thread=thread, pool=pool, faults=injector, host=host,
                            port=bound_port, token=token, sandbox_mode=mode, isolation_warning=warning, root=root,
                            remove_root=remove_root)  # fmt: skip
    handle.landlock_abi = info["landlockAbi"]
    atexit.register(handle.stop)
    return handle


def _make_undumpable() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


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
