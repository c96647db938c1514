"""Helpers for the reliability suite: dedicated emulators, waiting, process and filesystem scans, raw HTTP."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from azure_sessions import RetryPolicy, SessionsClient
from azure_sessions.emulator.inside.strays import process_table, read_stat
from tests.support import harness
from tests.support.harness import free_port, wait_until  # (wait_until: re-exported for the reliability tests)

INSTANCE_ENV = b"AZURE_SESSIONS_EMULATOR_INSTANCE="
FAST_RETRY = RetryPolicy(attempts=8, backoff_base=0.01, backoff_cap=0.05, jitter=0.1, max_retry_after=0.2)
"""Many attempts, tiny back-off: faults cost milliseconds, not seconds."""


def new_identifier() -> str:
    return f"rel-{uuid.uuid4()}"


def run_together(target: Callable[[Any], None], args: Iterable[Any]) -> None:
    """``target(arg)`` for each of ``args``, all at once, each in its own thread; returns when all have ended."""
    threads = [threading.Thread(target=target, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Prober(threading.Thread):
    """Another user's session: prints a counter every 50 ms and records failures and the slowest reply."""

    def __init__(self, endpoint: str, token: str) -> None:
        super().__init__(name="other-session", daemon=True)
        self.client = SessionsClient(endpoint, new_identifier(), token, read_timeout=60)
        self.done = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            started = time.monotonic()
            try:
                result = self.client.execute(f"print({n})", timeout=30)
                if result.stdout != f"{n}\n":
                    self.failures.append(f"call {n}: {result.status} {result.stdout!r} {result.stderr[-200:]!r}")
            except Exception as exc:
                self.failures.append(f"call {n}: {type(exc).__name__}: {exc}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.done += 1
            self.halt.wait(0.05)

    @classmethod
    @contextmanager
    def beside(cls, emu: Any, token: str, tier: str) -> Iterator[SimpleNamespace]:
        """``emu`` with a prober beside it for the test's whole life (``sandbox`` fixtures); afterwards, no call of
        the other session failed."""
        prober = cls(emu.endpoint, token)
        prober.start()
        try:
            yield SimpleNamespace(emu=emu, prober=prober, tier=tier)
        finally:
            prober.halt.set()
            prober.join(timeout=60)
        assert prober.failures == []

    def served_during(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; assert the other session kept being answered meanwhile, correctly."""
        before = self.done
        value = action()
        wait_until(lambda: self.done >= before + 2, timeout=20, what="the other session is served")
        assert self.failures == [] and self.slowest < 10, (self.failures, self.slowest)
        return value


# ---------------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def processes_matching(needles: list[bytes]) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose environment or command line contains one of ``needles``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        blob = _read(f"/proc/{entry}/environ") + b"\0" + _read(f"/proc/{entry}/cmdline")
        if not any(needle in blob for needle in needles):
            continue
        stat = read_stat(entry)
        if stat is not None and not stat.ended:
            cmd = _read(f"/proc/{entry}/cmdline").replace(b"\0", b" ")[:160].decode("utf-8", "replace")
            found.append((int(entry), cmd))
    return found


def session_processes(sandbox: SimpleNamespace, client: SessionsClient) -> Callable[[], list[int]]:
    """A function listing the live processes of this client's sandbox: those of its private uid (a root emulator
    gives each worker one), else those in its worker's session (the seccomp policy refuses ``setsid``, so every
    process of the session keeps it)."""
    session = sandbox.emu.session(client.identifier)
    if session.uid is not None:
        return lambda: processes_of_uid(session.uid)
    worker_pid = session.worker_pid
    return lambda: [pid for pid, stat in process_table().items() if stat.session == worker_pid and not stat.ended]


def processes_of_uid(uid: int) -> list[int]:
    """The live (not zombie) processes with ``uid`` among their real, effective, saved and file-system uids."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
            state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
            if str(uid) in uids and state != "Z":
                found.append(int(entry))
    return found


def emulator_needles(emu: Any) -> list[bytes]:
    """What identifies the processes of one emulator: its instance id (in every worker's environment, inside and
    outside bubblewrap) and its data root (on bubblewrap's and the unisolated worker's command line)."""
    instance = emu.instance_id.encode()
    return [INSTANCE_ENV + instance, str(emu.data_root).encode()]


def worker_processes(emu: Any) -> list[tuple[int, str]]:
    return processes_matching(emulator_needles(emu))


# ---------------------------------------------------------------------------------------------------------------
# Filesystem
# ---------------------------------------------------------------------------------------------------------------
def tree_state(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root`` (not following links): kind, size and a content hash for files."""
    state: dict[str, tuple[str, int, str]] = {}
    if not root.exists():
        return state
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not skip(here / d)]
        for name in dirnames:
            state[str((here / name).relative_to(root))] = ("dir", 0, "")
        for name in filenames:
            path = here / name
            if skip(path):
                continue
            st = path.lstat()
            if path.is_symlink():
                state[str(path.relative_to(root))] = ("link", 0, os.readlink(path))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 20 else str(st.st_mtime)
                state[str(path.relative_to(root))] = ("file", st.st_size, digest)
    return state


# ---------------------------------------------------------------------------------------------------------------
# Raw HTTP (http.client: nothing normalizes the path, unlike requests/urllib3)
# ---------------------------------------------------------------------------------------------------------------
def raw_request(
    endpoint: str, method: str, path: str, token: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Send ``path`` (appended to the endpoint's path, byte for byte) and return (status, body, headers)."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest(method, parts.path + "/" + path, skip_accept_encoding=True)
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def multipart(filename: bytes, data: bytes, field: bytes = b"file") -> tuple[bytes, str]:
    """A hand-built multipart body whose filename bytes go on the wire unescaped."""
    boundary = "rel" + uuid.uuid4().hex
    body = (
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="' + field + b'"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary.encode() + b"--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary}"


@contextmanager
def env_vars(**values: str) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------------------------
# The playground, in-process on a free loopback port
# ---------------------------------------------------------------------------------------------------------------
@contextmanager
def running_playground(emu: Any, token: str, models: dict, cache: Path, **settings: Any) -> Iterator[Any]:
    """The app against ``emu`` with settings from the environment (``load_settings``) overridden by ``settings``;
    yields (url, app). See :func:`tests.support.harness.running_playground`."""
    from dataclasses import replace

    from playground.settings import load_settings

    config = replace(load_settings(), server_port=free_port(), **settings)
    with harness.running_playground(emu, token, config, models, cache) as running:
        yield running
