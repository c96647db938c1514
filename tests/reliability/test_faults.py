"""Issue 6 item 1: executions through injected faults never run twice, fail clearly, and idempotent calls succeed.

The emulator injects 429 (with a tiny Retry-After), 503 (before and after processing), dropped connections
(before and after processing) and slow responses. Its execution log is the ground truth for "ran once".
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import pytest

from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient, SessionsError
from azure_sessions.emulator.faults import parse_rule
from azure_sessions.errors import ServiceError, ServiceResponseError, ThrottledError
from tests.reliability.support import FAST_RETRY, new_identifier, run_together

TOKEN = "faults-token"
# About 10 % of all requests hit a fault.
MIXED_FAULTS = [
    "429:rate=0.03:retry_after=0.01",
    "503:rate=0.015",
    "503:rate=0.01:phase=after",
    "drop:rate=0.01",
    "drop:rate=0.01:phase=after",
    "delay:rate=0.015:seconds=0.15",
    "delay:rate=0.01:seconds=0.15:phase=after",
]
SESSIONS, PER_SESSION = 5, 100  # 500 executions
IDEMPOTENT_EVERY = 5


def marker(session: int, call: int) -> str:
    return f"# call {session}-{call}\n"


def test_500_executions_through_faults_never_run_twice(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=TOKEN, prestart=SESSIONS, faults=MIXED_FAULTS, fault_seed=20240601)
    run_through_faults(emu, SESSIONS, PER_SESSION)


@pytest.mark.soak
def test_soak_4000_executions_through_faults(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=TOKEN, prestart=8, faults=MIXED_FAULTS, fault_seed=7)
    run_through_faults(emu, 8, 500)


def run_through_faults(emu, sessions: int, per_session: int) -> None:
    """``sessions`` threads × ``per_session`` executions through the faults, plus idempotent calls; then the
    proof from the emulator's log and from each session's own record."""
    outcomes: Counter[str] = Counter()
    succeeded: set[str] = set()
    unclear: list[str] = []
    idempotent_failures: list[str] = []
    lock = threading.Lock()

    def run(session: int) -> None:
        client = SessionsClient(emu.endpoint, new_identifier(), TOKEN, retry=FAST_RETRY, read_timeout=20)
        executor = AzureDynamicSessionsExecutor(client=client)
        for call in range(per_session):
            code = marker(session, call) + f"globals().setdefault('_ran', []).append({call})\nlen(_ran)"
            try:
                output = executor.run_code_raise_errors(code)
                assert isinstance(output.output, int)
                with lock:
                    outcomes["ok"] += 1
                    succeeded.add(marker(session, call))
            except SessionsError as exc:
                with lock:
                    outcomes[type(exc).__name__] += 1
                    if not isinstance(exc, (ServiceError, ServiceResponseError, ThrottledError)) or len(str(exc)) < 30:
                        unclear.append(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # anything outside the SessionsError family is a failure of the library
                with lock:
                    unclear.append(f"{type(exc).__name__}: {exc}")
            if call % IDEMPOTENT_EVERY == 0:
                try:
                    idempotent_round(client, f"f{call}.bin")
                except Exception as exc:
                    with lock:
                        idempotent_failures.append(f"{type(exc).__name__}: {exc}")
        client.close()

    started = time.monotonic()
    run_together(run, range(sessions))
    fired = emu.faults.snapshot()["fired"]
    emu.faults.clear()
    total = sessions * per_session
    print(f"\nfaults: {total} executions in {time.monotonic() - started:.1f} s; {dict(outcomes)}; fired {fired}")

    assert unclear == []
    assert idempotent_failures == []
    assert sum(outcomes.values()) == total
    assert outcomes["ok"] >= 0.85 * total, outcomes
    assert {"429", "503", "drop", "delay"} <= set(fired), fired  # every kind of fault really happened

    # Ground truth 1, the emulator's log: no code ran twice, and every call that succeeded ran exactly once.
    logged = Counter(entry["code"].split("\n", 1)[0] + "\n" for entry in emu.execution_log())
    twice = {code: n for code, n in logged.items() if n > 1}
    assert twice == {}
    assert all(logged[code] == 1 for code in succeeded)
    # Ground truth 2, each session's own record of what ran: no duplicates, and it matches the log.
    for identifier in {entry["identifier"] for entry in emu.execution_log()}:
        executed = emu.execution_count(identifier)
        client = SessionsClient(emu.endpoint, identifier, TOKEN)
        ran = client.execute("_ran").result
        client.close()
        calls = [int(n) for n in ran.strip("[]").split(",") if n.strip()]
        assert len(calls) == len(set(calls)) == executed


def idempotent_round(client: SessionsClient, name: str) -> None:
    """Upload, list, info, download, get session, delete: each must succeed through the faults (retried)."""
    payload = name.encode() * 100
    client.upload(io.BytesIO(payload), name)
    assert name in {f.name for f in client.list_files()}
    assert client.file_info(name).size == len(payload)
    assert client.read_bytes(name) == payload
    assert client.get_session().identifier == client.identifier
    client.delete_file(name)
    assert name not in {f.name for f in client.list_files()}


# Each fault alone, on an execution: what the caller sees and how often the code ran.
CASES = [
    ("429:count=1:retry_after=0.01:path=executions", None, 1),  # refused before processing: retried, ran once
    ("503:count=1:path=executions", ServiceError, 0),  # refused: not retried (a 503 might have run it)
    ("503:count=1:path=executions:phase=after", ServiceError, 1),  # ran, reply replaced: never re-sent
    ("drop:count=1:path=executions", ServiceResponseError, 0),  # connection cut before processing
    ("drop:count=1:path=executions:phase=after", ServiceResponseError, 1),  # ran, reply lost: never re-sent
    ("delay:count=1:seconds=0.3:path=executions", None, 1),  # slow reply: waited for
    ("429:retry_after=0.01:path=executions", ThrottledError, 0),  # throttled for good: a clear error at the end
]


@pytest.fixture(scope="module")
def single_fault_emulator():
    from tests.reliability.conftest import checked_emulator

    with checked_emulator(token=TOKEN, prestart=1) as emu:
        yield emu


@pytest.mark.parametrize(("rule", "error", "runs"), CASES, ids=[c[0].split(":path")[0] for c in CASES])
def test_each_fault_on_execute(single_fault_emulator, rule: str, error: type | None, runs: int) -> None:
    emu = single_fault_emulator
    client = SessionsClient(emu.endpoint, new_identifier(), TOKEN, retry=FAST_RETRY)
    client.execute("x = 0")
    emu.faults.set_rules([parse_rule(rule)])
    try:
        if error is None:
            assert client.execute("x += 1\nx").result == 1
        else:
            with pytest.raises(error) as caught:
                client.execute("x += 1\nx")
            message = str(caught.value)
            assert "execute" in message and len(message) > 40
            if error is ServiceResponseError:
                assert "may or may not have run" in message and "not sent again" in message
    finally:
        emu.faults.clear()
    assert client.execute("x").result == runs
    assert emu.execution_count(client.identifier) == 2 + runs
    client.close()
