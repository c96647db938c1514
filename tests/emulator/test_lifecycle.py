"""Pool lifecycle with dedicated instances: cooldown expiry, max sessions, clean stop, the CLI."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from azure_sessions.emulator import start_emulator
from tests.emulator.conftest import Api, new_id
from tests.support.harness import wait_until


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line or environment mentions ``marker`` (Linux /proc; root sees every process)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
                        break
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def short_cooldown():
    with start_emulator(token="t", cooldown=1.0, prestart=0) as emu:
        yield emu


def test_idle_session_expires_after_cooldown(short_cooldown):
    api = Api(short_cooldown.endpoint, "t")
    identifier = new_id()
    guid = api.run(identifier, "x = 1")["guid"]
    data_dir = short_cooldown.backend.session_dir(identifier)[1]
    wait_until(lambda: not any(s.identifier == identifier for s in short_cooldown.backend.list_sessions()), 10)
    wait_until(lambda: not data_dir.exists(), 10)  # the worker is killed and its directory removed just after
    assert api.request("GET", "session", identifier, "2025-02-02-preview").status_code == 404
    fresh = api.run(identifier, "'x' in dir()")
    assert fresh["executionResult"] is False and fresh["guid"] != guid


def test_a_busy_session_is_not_reaped(short_cooldown):
    """An execution longer than the cooldown keeps its session (idle-timer resets are unit-tested in test_emulated_pool)."""
    api = Api(short_cooldown.endpoint, "t")
    identifier = new_id()
    guid = api.run(identifier, "x = 1")["guid"]
    assert api.run(identifier, "import time; time.sleep(2.5); x")["guid"] == guid


def test_max_sessions_answers_404():
    with start_emulator(token="t", max_sessions=2, prestart=0) as emu:
        api = Api(emu.endpoint, "t")
        first, second = new_id(), new_id()
        api.run(first, "1")
        api.run(second, "1")
        refused = api.execute(new_id(), "1")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "MaxConcurrentSessionsReached"
        assert refused.headers["x-ms-error-code"] == "MaxConcurrentSessionsReached"
        assert api.run(first, "2")["status"] == "Succeeded"
        assert api.request("DELETE", "session", first, "2025-02-02-preview").status_code == 204
        assert api.execute(new_id(), "1").status_code == 202


def test_stop_leaves_no_workers_and_no_files(tmp_path):
    emu = start_emulator(token="t", prestart=1, data_root=tmp_path)
    instance = emu.backend.workers.launcher.instance_id
    api = Api(emu.endpoint, "t")
    for _ in range(2):
        api.run(new_id(), "import subprocess; p = subprocess.Popen(['sleep', '600'])")
    emu.wait_for_pool(60)
    assert len(processes_with(instance)) >= 3
    root = emu.data_root
    assert root.exists() and Path(tmp_path) in root.parents
    emu.stop()
    emu.stop()  # idempotent
    wait_until(lambda: not processes_with(instance), 10)
    assert not root.exists() and tmp_path.exists()
    assert not emu.running
    with pytest.raises(requests.ConnectionError):
        requests.get(emu.endpoint + "/files", timeout=2)


def test_context_manager_and_repr_hide_the_token():
    with start_emulator(token="very-secret-token", prestart=0) as emu:
        assert "very-secret-token" not in repr(emu)
        assert emu.endpoint.startswith(f"http://127.0.0.1:{emu.port}/subscriptions/")
        assert emu.endpoint.endswith("/resourceGroups/local-rg/sessionPools/local-pool")
    assert not emu.running


def test_isolation_is_reported_through_the_api(api, emulator):
    info = api.request("GET", ".emulator/info", version=None).json()
    assert info["sandboxMode"] == emulator.sandbox_mode and info["isolated"] == emulator.isolated
    assert info["isolationWarning"] == emulator.isolation_warning


def test_unisolated_mode_is_labelled(unisolated, unisolated_api):
    assert unisolated.sandbox_mode == "unisolated" and unisolated.isolated is False
    assert "UNISOLATED" in unisolated.isolation_warning
    info = unisolated_api.request("GET", ".emulator/info", version=None).json()
    assert info["isolated"] is False and "UNISOLATED" in info["isolationWarning"]


def test_cli_prints_endpoint_and_stops_on_ctrl_c(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "azure_sessions.emulator",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--prestart",
            "0",
            "--sandbox",
            "none",
            "--data-root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        while not any("Press Ctrl-C" in line for line in seen):
            seen.append(lines.get(timeout=60))
        output = "".join(seen)
        endpoint = next(line.split("endpoint:")[1].strip() for line in seen if "endpoint:" in line)
        assert "sandbox:  NONE" in output and "UNISOLATED" in output and "cli-token" not in output
        assert Api(endpoint, "cli-token").run(new_id(), "print('cli')")["stdout"] == "cli\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []


def test_directories_of_killed_emulators_are_swept(tmp_path):
    from azure_sessions.emulator import OWNER_FILE, _owner_stamp

    stale, live, foreign = tmp_path / "emulator-dead", tmp_path / "emulator-live", tmp_path / "emulator-nostamp"
    for path in (stale, live, foreign):
        (path / "sessions").mkdir(parents=True)
    (stale / OWNER_FILE).write_text("999999999 12345")
    (live / OWNER_FILE).write_text(_owner_stamp(os.getpid()))
    with start_emulator(token="t", prestart=0, data_root=tmp_path, sandbox="none"):
        assert not stale.exists() and live.exists() and foreign.exists()
