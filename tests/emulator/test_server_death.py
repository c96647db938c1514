"""No process of a session outlives its server, stopped or running, whenever the server dies: even between the
signals of a kill (the worst moment, made here by a server that kills itself right after the first signal it sends:
``tests/support/dying_server.py``), in each isolating tier.

Ending a session never stops a process first (a stopped worker whose server died before the kill once stayed
stopped, with parent 1, for good), and what the server could not end, the template does when its socket closes: it
is the subreaper of everything its workers start (``inside/forkserver.py``). Under bubblewrap the template's sandbox
dies with the server too (``--die-with-parent``), every namespace inside it with it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_sessions.emulator.inside.strays import read_stat
from azure_sessions.emulator.tiers import tier_for_choice
from tests.emulator.conftest import Api, new_id
from tests.support.harness import wait_until
from tests.support.tiers import tier_problem

DYING_SERVER = Path(__file__).resolve().parents[1] / "support" / "dying_server.py"
MARKER = "AZURE_SESSIONS_EMULATOR_INSTANCE"  # in every worker's environment, inherited by what it starts

# A session with more than its worker: a background program, and a child the session itself stopped.
SESSION = """
import os, signal, subprocess
sleeper = subprocess.Popen(["sleep", "600"])
child = os.fork()
if child == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)
os.environ["AZURE_SESSIONS_EMULATOR_INSTANCE"]
"""


def marked_processes(instance: str) -> dict[int, str]:
    """Every live process of this emulator instance (its template, workers, and what they started), by pid, with
    its state letter (T: stopped) and command."""
    needle = f"{MARKER}={instance}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        stat = read_stat(entry)
        if needle in environ and stat is not None and not stat.ended:
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as fh:
                found[int(entry)] = f"{stat.state} {fh.read().strip()}"
    return found


@contextlib.contextmanager
def dying_server(tier: str, data_root: Path, arm: Path) -> Iterator[tuple[subprocess.Popen, Api]]:
    token = secrets.token_urlsafe(16)
    # (--token=T: a random token may start with "-", which would read as an option)
    command = [sys.executable, "-I", str(DYING_SERVER), str(arm), "--port", "0", "--sandbox", tier, "--prestart",
               "1", f"--token={token}", "--data-root", str(data_root)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        endpoint = None
        for line in server.stdout:
            if line.strip().startswith("endpoint:"):
                endpoint = line.split("endpoint:", 1)[1].strip()
                break
        assert endpoint, f"the emulator did not start: {server.stderr.read()[-2000:]}"
        yield server, Api(endpoint, token)
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()


@pytest.fixture(params=["bubblewrap", "landlock"])
def tier(request) -> str:
    problem = tier_problem(request.param)
    if problem:
        pytest.skip(f"the {request.param} tier is not usable here: {problem}")
    return request.param


@pytest.mark.parametrize("moment", ["deleting the session", "ending a timed-out cell's processes"])
def test_no_process_of_a_session_outlives_a_server_killed_at_the_worst_moment(tier, moment, tmp_path):
    if moment.startswith("ending") and not tier_for_choice(tier).host_ends_session_processes:
        pytest.skip(f"under {tier} the worker ends what a timed-out cell left, inside its namespace")
    arm = tmp_path / "arm"
    instance = None
    # (not below tmp_path, which may be closed to the private uid of a root emulator's workers)
    data_root = Path(tempfile.mkdtemp(prefix="sessions-dying-server-"))
    data_root.chmod(0o711)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, data_root, ignore_errors=True)
        server, api = cleanup.enter_context(dying_server(tier, data_root, arm))
        try:
            identifier = new_id()
            result = api.run(identifier, SESSION)
            assert result["status"] == "Succeeded", result["stderr"]
            instance = result["executionResult"]
            processes = wait_until(lambda: (found := marked_processes(instance)) and any(s.startswith("T") for s in found.values()) and found,
                                   what="the session's stopped child")  # fmt: skip
            assert len(processes) >= 5, processes  # template, worker, sleeper, stopped child, the pool's next worker
            arm.touch()  # from now on the server's first signal is its last act
            with contextlib.suppress(Exception):
                if moment.startswith("deleting"):
                    api.request("DELETE", "session", identifier, "2025-02-02-preview", timeout=30)
                else:
                    api.execute(identifier, "import subprocess, time\nsubprocess.Popen(['sleep', '600'])\n"
                                "time.sleep(60)", timeout=2)  # fmt: skip
            assert server.wait(timeout=30) == -signal.SIGKILL  # it died at the moment it was meant to
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not marked_processes(instance), timeout=30, what="every process of it ends")
            assert not marked_processes(instance), f"left behind (pid: state command): {marked_processes(instance)}"
        finally:
            if instance is not None:  # a failure leaves nothing behind for the next tests
                for pid in marked_processes(instance):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
