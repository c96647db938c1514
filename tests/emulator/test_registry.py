"""The session registry without HTTP and without processes: fake workers, a fake clock."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from azure_sessions.emulator.errors import EmulatorError
from azure_sessions.emulator.sessions import FAILED, RUNNING, SUCCEEDED, SessionRegistry, validate_identifier
from azure_sessions.emulator.workers import CellResult, WorkerLost


class FakeWorker:
    def __init__(self, root: Path, behaviour) -> None:
        self.guid = str(uuid.uuid4())
        self.data_dir = root / self.guid
        self.data_dir.mkdir()
        self.uid = None
        self.behaviour = behaviour
        self.killed = False
        self.ran: list[str] = []

    @property
    def alive(self) -> bool:
        return not self.killed

    def execute(self, code: str, timeout: float, grace: float = 3.0) -> CellResult:
        self.ran.append(code)
        return self.behaviour(self, code)

    def cleanup(self) -> None:
        self.killed = True


def default_behaviour(worker: FakeWorker, code: str) -> CellResult:
    if code == "crash":
        worker.killed = True
        raise WorkerLost("the sandbox process exited unexpectedly with status 1")
    if code.startswith("wait:"):
        EVENTS[code].wait(10)
    return CellResult(ok=code != "fail", stdout=f"ran {code}\n", stderr="", result=len(code), duration_ms=1)


EVENTS: dict[str, threading.Event] = {}


class FakePool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[FakeWorker] = []
        self.closed = False

    def acquire(self) -> FakeWorker:
        worker = FakeWorker(self.root, default_behaviour)
        self.made.append(worker)
        return worker

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(tmp_path, clock) -> SessionRegistry:
    reg = SessionRegistry(FakePool(tmp_path), cooldown=60, max_sessions=3, clock=clock)
    yield reg
    reg.close()


def test_first_call_allocates_and_state_is_kept(registry):
    first = registry.execute("alpha", "x = 1")
    second = registry.execute("alpha", "x")
    assert first.status == second.status == SUCCEEDED
    assert first.session_guid == second.session_guid
    assert registry.pool.made[0].ran == ["x = 1", "x"]
    assert (first.stdout, first.result) == ("ran x = 1\n", 5)


def test_identifiers_get_separate_workers_and_dirs(registry):
    a = registry.execute("alpha", "1")
    b = registry.execute("beta", "1")
    assert a.session_guid != b.session_guid
    assert registry.session_dir("alpha")[1] != registry.session_dir("beta")[1]


def test_failure_status_and_counters(registry):
    assert registry.execute("alpha", "fail").status == FAILED
    registry.execute("alpha", "ok")
    registry.execute("beta", "ok")
    assert registry.execution_count() == 3
    assert registry.execution_count("alpha") == 2
    assert [e["code"] for e in registry.execution_log] == ["fail", "ok", "ok"]


def test_max_sessions_gives_404_for_new_identifiers_only(registry):
    for name in ("a1", "a2", "a3"):
        registry.execute(name, "1")
    with pytest.raises(EmulatorError) as info:
        registry.execute("a4", "1")
    assert info.value.status == 404 and info.value.code == "MaxConcurrentSessionsReached"
    assert registry.execute("a1", "1").status == SUCCEEDED
    registry.delete_session("a1")
    assert registry.execute("a4", "1").status == SUCCEEDED


def test_cooldown_expiry_with_fake_clock(registry, clock):
    guid = registry.execute("alpha", "1").session_guid
    clock.now += 59
    registry.execute("beta", "1")
    assert registry.reap() is not None
    assert {s.identifier for s in registry.list_sessions()} == {"alpha", "beta"}
    clock.now += 2  # alpha idle 61 s, beta 2 s
    registry.reap()
    assert [s.identifier for s in registry.list_sessions()] == ["beta"]
    assert registry.pool.made[0].killed
    assert registry.execute("alpha", "1").session_guid != guid


def test_every_call_resets_the_idle_timer(registry, clock):
    registry.execute("alpha", "1")
    for _ in range(5):
        clock.now += 50
        registry.session_dir("alpha")  # a file operation counts as activity
        registry.reap()
    assert [s.identifier for s in registry.list_sessions()] == ["alpha"]


def test_busy_sessions_are_not_reaped(registry, clock):
    EVENTS["wait:1"] = threading.Event()
    record = registry.execute("alpha", "wait:1", wait=False)
    clock.now += 600
    registry.reap()
    assert [s.identifier for s in registry.list_sessions()] == ["alpha"]
    EVENTS["wait:1"].set()
    assert record.done.wait(5) and record.status == SUCCEEDED


def test_async_execution_is_running_then_succeeded(registry):
    EVENTS["wait:2"] = threading.Event()
    record = registry.execute("alpha", "wait:2", wait=False, execution_type="Asynchronous")
    assert record.status == RUNNING
    assert registry.get_execution("alpha", record.id) is record
    EVENTS["wait:2"].set()
    assert record.done.wait(5)
    assert record.status == SUCCEEDED


def test_repeated_operation_id_does_not_run_twice(registry):
    first = registry.execute("alpha", "x = 1", execution_id="op-1")
    again = registry.execute("alpha", "x = 1", execution_id="op-1")
    assert again is first
    assert registry.pool.made[0].ran == ["x = 1"]
    assert registry.execution_count("alpha") == 1


def test_worker_loss_fails_the_call_and_next_call_gets_new_guid(registry):
    guid = registry.execute("alpha", "x = 1").session_guid
    lost = registry.execute("alpha", "crash")
    assert lost.status == FAILED
    assert "SessionLost" in lost.stderr and "new session id" in lost.stderr
    after = registry.execute("alpha", "x")
    assert after.status == SUCCEEDED and after.session_guid != guid


def test_delete_and_forced_expiry(registry):
    registry.execute("alpha", "1")
    registry.execute("beta", "1")
    registry.delete_session("alpha")
    with pytest.raises(EmulatorError) as info:
        registry.delete_session("alpha")
    assert info.value.status == 404
    with pytest.raises(EmulatorError):
        registry.get_session("alpha")
    assert registry.expire("beta") == 1
    assert registry.expire("beta") == 0
    registry.execute("gamma", "1")
    assert registry.expire() == 1
    assert registry.list_sessions() == []


def test_unknown_execution_id_is_404(registry):
    registry.execute("alpha", "1")
    with pytest.raises(EmulatorError) as info:
        registry.get_execution("alpha", "nope")
    assert info.value.status == 404


@pytest.mark.parametrize(
    "good", ["abcd", "a", str(uuid.uuid4()), "x" * 256, "a|b-c&d^e%f$g#(h){i}[j];k<l>", "a_b.c@d"]
)
def test_valid_identifiers(good):
    assert validate_identifier(good) == good


@pytest.mark.parametrize("bad", ["", None, "x" * 257, "has space", "tab\there", "new\nline", "ünïcode"])
def test_invalid_identifiers(bad):
    with pytest.raises(EmulatorError) as info:
        validate_identifier(bad)
    assert info.value.status == 400


def test_close_kills_everything(tmp_path, clock):
    pool = FakePool(tmp_path)
    reg = SessionRegistry(pool, cooldown=60, clock=clock)
    reg.execute("alpha", "1")
    reg.close()
    assert pool.closed and all(w.killed for w in pool.made)
    with pytest.raises(EmulatorError) as info:
        reg.execute("beta", "1")
    assert info.value.status == 503
