"""Issue 6 item 6: many sessions at once, each checking its own marker variable and file: no errors, no leak
between sessions; and nothing left behind (worker processes, temp directories) once the emulator stops or the
whole browser suite has run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from azure_sessions import SessionsClient
from azure_sessions.errors import SessionsError
from tests.reliability.support import new_identifier, processes_matching, run_together
from tests.support.tiers import tier_problem

TOKEN = "load-token"
ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import os
assert marker == {marker!r}, ('variable leaked', marker)
assert open('/mnt/data/marker.txt').read() == {marker!r}, 'file leaked'
assert sorted(os.listdir('/mnt/data')) == {files!r}, sorted(os.listdir('/mnt/data'))
count = globals().get('count', 0) + 1
count
"""


def run_load(emu, sessions: int, executions: int) -> dict:
    """``sessions`` threads, each with its own session, ``executions`` checked calls each, all at once."""
    errors: list[str] = []
    guids: dict[str, set[str]] = {}
    barrier = threading.Barrier(sessions)

    def user(n: int) -> None:
        marker = f"marker-{n}-{new_identifier()}"
        client = SessionsClient(emu.endpoint, new_identifier(), TOKEN)
        seen = guids.setdefault(client.identifier, set())
        try:
            barrier.wait()
            setup = client.execute(f"marker = {marker!r}\nopen('/mnt/data/marker.txt', 'w').write(marker)")
            assert setup.succeeded, setup.stderr
            for i in range(1, executions + 1):
                files = ["marker.txt"]
                if i % 10 == 0:  # now and then a file call, between executions
                    client.upload(io.BytesIO(marker.encode()), "upload.txt")
                    assert {f.name for f in client.list_files()} == {"marker.txt", "upload.txt"}
                    assert client.read_bytes("upload.txt") == marker.encode()
                    files = ["marker.txt", "upload.txt"]
                result = client.execute(CHECK.format(marker=marker, files=files))
                seen.add(result.session_guid or "")
                assert result.succeeded and result.result == i, (i, result.status, result.stderr[-500:])
                if i % 10 == 0:
                    client.delete_file("upload.txt")
            client.delete_session()
        except Exception as exc:  # collected and reported together
            errors.append(f"session {n}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    started = time.monotonic()
    run_together(user, range(sessions))
    elapsed = time.monotonic() - started
    assert errors == []
    assert all(len(g) == 1 for g in guids.values())  # no session was recycled under load
    assert len({next(iter(g)) for g in guids.values()}) == sessions  # and no two shared a sandbox
    total = sessions * (executions + 1)
    print(f"\nload: {sessions} sessions x {executions} executions in {elapsed:.1f} s ({total / elapsed:.0f} exec/s)")
    return {"elapsed": elapsed, "executions_per_second": total / elapsed}


def test_20_sessions_x_50_executions_at_once(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=TOKEN, prestart=4)
    run_load(emu, sessions=20, executions=50)
    assert emu.counters().sessions == 0  # every session deleted itself


@pytest.mark.soak
def test_soak_50_sessions_x_200_executions(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=TOKEN, prestart=8)
    run_load(emu, sessions=50, executions=200)


@pytest.mark.soak
@pytest.mark.parametrize("tier", ["bubblewrap", "landlock"])
def test_sessions_ended_mid_cell_never_hurt_fresh_ones(start_emulator_checked, tier: str) -> None:
    """Threads delete and interrupt sessions whose cells are running (some ignore the interrupt and are killed)
    while others start fresh sessions: every fresh session answers at once. (Once, a killed worker's reader took
    the next worker's replies; once, two cleanups of one worker locked every later worker out of its scratch.)"""
    problem = tier_problem(tier)
    if problem:
        pytest.skip(f"the {tier} tier is not usable here: {problem}")
    emu = start_emulator_checked(token=TOKEN, prestart=2, sandbox=tier)
    stop_at = time.monotonic() + 30
    cells = ["import time; time.sleep(5)",
             "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(8)"]  # fmt: skip
    problems: list[str] = []
    fresh_runs = [0]

    def ender(n: int) -> None:
        turn = 0
        while time.monotonic() < stop_at:
            turn += 1
            with SessionsClient(emu.endpoint, new_identifier(), TOKEN) as client:
                run = functools.partial(client.execute, cells[turn % 2], timeout=1 + turn % 2 * 59)
                cell = threading.Thread(target=quietly, args=(run,))
                cell.start()
                time.sleep(0.05 * (1 + (n + turn) % 8))
                if turn % 3:
                    quietly(client.interrupt)
                if turn % 3 != 1:
                    quietly(client.delete_session)
                cell.join()

    def newcomer(n: int) -> None:
        while time.monotonic() < stop_at:
            with SessionsClient(emu.endpoint, new_identifier(), TOKEN) as client:
                started = time.monotonic()
                result = client.execute("'value' in dir()")
                if result.result is not False or time.monotonic() - started > 10:
                    problems.append(f"{result.status}: {result.stderr[:300]} ({time.monotonic() - started:.1f} s)")
                fresh_runs[0] += 1
                client.delete_session()

    def quietly(call) -> None:  # the ended sessions' own outcomes vary by design
        with contextlib.suppress(SessionsError):
            call()

    run_together(lambda n: ender(n) if n < 3 else newcomer(n), range(5))
    assert problems == [], f"{len(problems)} of {fresh_runs[0]} fresh sessions failed: {problems[:3]}"
    print(f"\n{tier}: {fresh_runs[0]} fresh sessions beside sessions ended mid-cell, none failed")


@pytest.mark.soak
@pytest.mark.e2e
def test_nothing_is_left_after_the_browser_suite(tmp_path: Path) -> None:
    """Run the whole browser suite in a child process with a private TMPDIR; afterwards no process and no temp
    directory of it remains (emulator workers, playground session dirs, Gradio's cache)."""
    tmpdir = Path(tempfile.mkdtemp(prefix="sp-e2e-"))  # short: Chromium's socket paths must fit in 108 bytes
    try:
        env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e", "--basetemp",
                   str(tmp_path / "basetemp")]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print("\ne2e suite: " + done.stdout.strip().splitlines()[-1])
        leftovers = processes_matching([str(tmpdir).encode()])
        assert leftovers == [], leftovers
        assert sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")) == [], "temporary files left behind"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
