"""Live output at the pool level, in every tier: what a running cell prints reaches the caller's ``on_output`` while
the cell runs, coalesced, within the output cap, and the execution's stdout and stderr still hold all of it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from azure_sessions.emulator.launcher import Launcher
from azure_sessions.emulator.sessions import EmulatedPool
from azure_sessions.emulator.tiers import MAX_STREAM_BYTES, tier_for_choice
from azure_sessions.emulator.workers import WorkerPool


@pytest.fixture(scope="module", params=["bubblewrap", "landlock", "none"])
def pool(request) -> Iterator[EmulatedPool]:
    kind = tier_for_choice(request.param)
    problem = kind.problem()
    if problem:
        pytest.skip(f"the {request.param} tier is not usable here: {problem}")
    tier = kind("chosen by the test") if not kind.isolated else kind()
    root = Path(tempfile.mkdtemp(prefix="azure-sessions-live-"))
    root.chmod(0o711)  # as the emulator makes its own: a worker's private uid reaches its directories
    workers = WorkerPool(Launcher(tier, root), size=0)
    emulated = EmulatedPool(workers, cooldown=600)
    workers.start()
    emulated.start()
    try:
        yield emulated
    finally:
        emulated.close()
        shutil.rmtree(root, ignore_errors=True)


def run(pool: EmulatedPool, code: str, timeout: float = 60) -> SimpleNamespace:
    received: list[tuple[float, str, str]] = []
    started = time.monotonic()
    record = pool.execute(f"live-{time.monotonic_ns()}", code, timeout=timeout,
                          on_output=lambda stream, text: received.append((time.monotonic(), stream, text)))  # fmt: skip
    ended = time.monotonic()
    streamed = {name: "".join(text for _, stream, text in received if stream == name) for name in ("stdout", "stderr")}
    return SimpleNamespace(record=record, received=received, streamed=streamed, started=started, ended=ended)


def test_a_line_printed_arrives_before_the_cell_ends(pool) -> None:
    code = "import sys, time\nprint('first')\nprint('warned', file=sys.stderr)\ntime.sleep(1)\nprint('second')"
    live = run(pool, code)
    assert live.record.status == "Succeeded", live.record.stderr
    first = next(at for at, stream, text in live.received if stream == "stdout" and "first" in text)
    assert live.ended - first > 0.7, (live.ended - live.started, first - live.started)  # not held until the end
    assert live.streamed == {"stdout": "first\nsecond\n", "stderr": "warned\n"}
    assert (live.record.stdout, live.record.stderr) == ("first\nsecond\n", "warned\n")  # the result as before


def test_live_output_is_coalesced_and_complete(pool) -> None:
    code = "import time\nfor i in range(150):\n    print(i)\n    time.sleep(0.01)"
    live = run(pool, code)
    assert live.streamed["stdout"] == live.record.stdout == "".join(f"{i}\n" for i in range(150))
    seconds = live.ended - live.started
    calls = [at for at, stream, _ in live.received if stream == "stdout"]
    assert 2 <= len(calls) <= seconds * 10 + 3, (len(calls), seconds)  # about ten a second, not one per line


def test_live_output_stops_at_the_output_cap(pool) -> None:
    live = run(pool, f"import sys\nsys.stdout.write('x' * {3 * MAX_STREAM_BYTES})\nprint('done', file=sys.stderr)")
    assert live.streamed["stdout"] == "x" * MAX_STREAM_BYTES  # the cap applies to what is streamed
    assert live.record.stdout.startswith(live.streamed["stdout"]) and "truncated by the emulator" in live.record.stdout
    assert live.streamed["stderr"] == "done\n"


def test_without_a_callback_nothing_is_streamed(pool) -> None:
    record = pool.execute("quiet", "print('only in the result')")
    assert record.stdout == "only in the result\n"
    later = run(pool, "print('next cell')")  # no output of the earlier cell leaks into a later callback
    assert later.streamed == {"stdout": "next cell\n", "stderr": ""}
