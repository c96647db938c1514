"""A timed-out execution ends the processes it started (children, a detached busy loop), in both sandbox modes;
processes started by earlier, finished executions and the session's variables are kept.
"""

from __future__ import annotations

import pytest

from azure_sessions import SessionsClient
from azure_sessions.emulator.tiers import BubblewrapTier
from tests.reliability.support import new_identifier

TOKEN = "runaway-token"
RUNAWAY = """
import os, subprocess, time
sleepers = [subprocess.Popen(['sleep', '1000']) for _ in range(3)]
if os.fork() == 0:  # a child spinning on the CPU, which tries to leave the session (the seccomp policy refuses)
    try:
        os.setsid()
    except PermissionError:
        pass
    while True:
        pass
while True:
    time.sleep(0.1)
"""


@pytest.mark.parametrize("sandbox", ["none", pytest.param("bubblewrap", marks=pytest.mark.bwrap)])
def test_a_timed_out_execution_ends_what_it_started(start_emulator_checked, sandbox: str) -> None:
    if sandbox == "bubblewrap" and BubblewrapTier.problem():
        pytest.skip(f"bubblewrap is not usable here: {BubblewrapTier.problem()}")
    emu = start_emulator_checked(token=TOKEN, prestart=0, sandbox=sandbox, interrupt_grace=2.0)
    client = SessionsClient(emu.endpoint, new_identifier(), TOKEN)
    first = client.execute("import subprocess\nkept = subprocess.Popen(['sleep', '1000'])\nvalue = 42")
    result = client.execute(RUNAWAY, timeout=2)
    assert result.status == "Failed" and "timeout of 2 seconds" in result.stderr
    assert "4 processes it started were ended" in result.stderr  # three sleepers and the detached loop
    after = client.execute("kept.poll() is None, [p.poll() is not None for p in sleepers], value")
    assert after.result == "(True, [True, True, True], 42)"  # the earlier process and the variables survive
    assert after.session_guid == first.session_guid
    client.execute("kept.kill(); kept.wait()")
    client.close()
