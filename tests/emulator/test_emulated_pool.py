"""The emulated pool without HTTP and without processes: fake workers, a fake clock."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from azure_sessions.emulator.errors import EmulatorError
from azure_sessions.emulator.sessions import FAILED, RUNNING, SUCCEEDED, EmulatedPool, validate_identifier
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

    def execute(self, code: str, timeout: float, grace: float = 3.0, on_output=None, **options) -> CellResult:
        self.ran.append(code)
        self.options = options
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


class FakeWorkerPool:
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
def pool(tmp_path, clock) -> EmulatedPool:
    emulated = EmulatedPool(FakeWorkerPool(tmp_path), cooldown=60, max_sessions=3, clock=clock)
    yield emulated
    emulated.close()


def test_first_call_allocates_and_state_is_kept(pool):
    first = pool.execute("alpha", "x = 1")
    second = pool.execute("alpha", "x")
    assert first.status == second.status == SUCCEEDED
    assert first.session_guid == second.session_guid
    assert pool.workers.made[0].ran == ["x = 1", "x"]
    assert (first.stdout, first.result) == ("ran x = 1\n", 5)


def test_identifiers_get_separate_workers_and_dirs(pool):
    a = pool.execute("alpha", "1")
    b = pool.execute("beta", "1")
    assert a.session_guid != b.session_guid
    assert pool.session_dir("alpha")[1] != pool.session_dir("beta")[1]


def test_failure_status_and_counters(pool):
    assert pool.execute("alpha", "fail").status == FAILED
    pool.execute("alpha", "ok")
    pool.execute("beta", "ok")
    assert pool.execution_count() == 3
    assert pool.execution_count("alpha") == 2
    assert [e["code"] for e in pool.execution_log] == ["fail", "ok", "ok"]


def test_max_sessions_gives_404_for_new_identifiers_only(pool):
    for name in ("one1", "two2", "three3"):
        pool.execute(name, "1")
    with pytest.raises(EmulatorError) as info:
        pool.execute("four4", "1")
    assert info.value.status == 404 and info.value.code == "MaxConcurrentSessionsReached"
    assert pool.execute("one1", "1").status == SUCCEEDED
    pool.delete_session("one1")
    assert pool.execute("four4", "1").status == SUCCEEDED


def test_cooldown_expiry_with_fake_clock(pool, clock):
    guid = pool.execute("alpha", "1").session_guid
    clock.now += 59
    pool.execute("beta", "1")
    assert pool.reap() is not None
    assert {s.identifier for s in pool.list_sessions()} == {"alpha", "beta"}
    clock.now += 2  # alpha idle 61 s, beta 2 s
    pool.reap()
    assert [s.identifier for s in pool.list_sessions()] == ["beta"]
    assert pool.workers.made[0].killed
    assert pool.execute("alpha", "1").session_guid != guid


def test_every_call_resets_the_idle_timer(pool, clock):
    pool.execute("alpha", "1")
    for _ in range(5):
        clock.now += 50
        pool.session_dir("alpha")  # a file operation counts as activity
        pool.reap()
    assert [s.identifier for s in pool.list_sessions()] == ["alpha"]


def test_busy_sessions_are_not_reaped(pool, clock):
    EVENTS["wait:1"] = threading.Event()
    record = pool.execute("alpha", "wait:1", wait=False)
    clock.now += 600
    pool.reap()
    assert [s.identifier for s in pool.list_sessions()] == ["alpha"]
    EVENTS["wait:1"].set()
    assert record.done.wait(5) and record.status == SUCCEEDED


def test_async_execution_is_running_then_succeeded(pool):
    EVENTS["wait:2"] = threading.Event()
    record = pool.execute("alpha", "wait:2", wait=False, execution_type="Asynchronous")
    assert record.status == RUNNING
    assert pool.get_execution("alpha", record.id) is record
    EVENTS["wait:2"].set()
    assert record.done.wait(5)
    assert record.status == SUCCEEDED


def test_repeated_operation_id_does_not_run_twice(pool):
    first = pool.execute("alpha", "x = 1", execution_id="op-1")
    again = pool.execute("alpha", "x = 1", execution_id="op-1")
    assert again is first
    assert pool.workers.made[0].ran == ["x = 1"]
    assert pool.execution_count("alpha") == 1


def test_finished_executions_are_kept_within_a_byte_budget_the_latest_always(tmp_path, clock):
    """What a session's finished executions hold is bounded: past the budget the oldest are forgotten (a read by
    their id is a 404), the latest is kept whatever its size."""
    emulated = EmulatedPool(FakeWorkerPool(tmp_path), cooldown=60, clock=clock, executions_kept_bytes=10_000)
    try:
        small = [emulated.execute("alpha", f"{i}" * 1000) for i in range(5)]  # ~1,000 bytes of stdout each
        assert all(emulated.get_execution("alpha", r.id) is r for r in small)
        big = emulated.execute("alpha", "b" * 50_000)  # over the whole budget by itself
        assert emulated.get_execution("alpha", big.id) is big
        for forgotten in small:
            with pytest.raises(EmulatorError) as info:
                emulated.get_execution("alpha", forgotten.id)
            assert info.value.status == 404
        other = emulated.execute("beta", "1")  # another session's budget is its own
        after = emulated.execute("alpha", "2" * 1000)
        assert emulated.get_execution("beta", other.id) is other
        assert emulated.get_execution("alpha", after.id) is after
        with pytest.raises(EmulatorError):
            emulated.get_execution("alpha", big.id)  # no longer the latest, and over the budget
    finally:
        emulated.close()


def test_worker_loss_fails_the_call_and_next_call_gets_new_guid(pool):
    guid = pool.execute("alpha", "x = 1").session_guid
    lost = pool.execute("alpha", "crash")
    assert lost.status == FAILED
    assert "SessionLost" in lost.stderr and "new session id" in lost.stderr
    after = pool.execute("alpha", "x")
    assert after.status == SUCCEEDED and after.session_guid != guid


def test_delete_and_forced_expiry(pool):
    pool.execute("alpha", "1")
    pool.execute("beta", "1")
    pool.delete_session("alpha")
    with pytest.raises(EmulatorError) as info:
        pool.delete_session("alpha")
    assert info.value.status == 404
    with pytest.raises(EmulatorError):
        pool.get_session("alpha")
    assert pool.expire("beta") == 1
    assert pool.expire("beta") == 0
    pool.execute("gamma", "1")
    assert pool.expire() == 1
    assert pool.list_sessions() == []


def test_unknown_execution_id_is_404(pool):
    pool.execute("alpha", "1")
    with pytest.raises(EmulatorError) as info:
        pool.get_execution("alpha", "nope")
    assert info.value.status == 404


@pytest.mark.parametrize(
    "good", ["abcd", str(uuid.uuid4()), "x" * 128, "a|b-c&d^e%f$g#(h){i}[j];k<l>", "a_b.c@d", "q?/:\"';+=!~`*,"]
)
def test_valid_identifiers(good):
    assert validate_identifier(good) == good


@pytest.mark.parametrize(
    "bad", ["", None, "a", "abc", "x" * 129, "x" * 256, "has space", "tab\there", "new\nline", "ünïcode", "back\\sl"]
)
def test_invalid_identifiers(bad):
    with pytest.raises(EmulatorError) as info:
        validate_identifier(bad)
    assert info.value.status == 400 and info.value.target == "identifier"


def test_a_full_pool_answers_404_or_429_as_configured(tmp_path, clock):
    for status in (404, 429):
        full = EmulatedPool(FakeWorkerPool(tmp_path), max_sessions=1, clock=clock, pool_full_status=status)
        full.execute("first", "1")
        with pytest.raises(EmulatorError) as info:
            full.execute("second", "1")
        assert (info.value.status, info.value.code) == (status, "MaxConcurrentSessionsReached")
        full.close()
    with pytest.raises(ValueError):
        EmulatedPool(FakeWorkerPool(tmp_path), pool_full_status=503)


def test_execution_options_reach_the_worker(pool):
    pool.execute("alpha", "1")
    assert pool.workers.made[0].options == {"render": "legacy", "empty_namespace": False}
    pool.execute("alpha", "1", rendering="jupyter", empty_kernel=True)
    assert pool.workers.made[0].options == {"render": "jupyter", "empty_namespace": True}


def test_close_kills_everything(tmp_path, clock):
    workers = FakeWorkerPool(tmp_path)
    pool = EmulatedPool(workers, cooldown=60, clock=clock)
    pool.execute("alpha", "1")
    pool.close()
    assert workers.closed and all(w.killed for w in workers.made)
    with pytest.raises(EmulatorError) as info:
        pool.execute("beta", "1")
    assert info.value.status == 503
