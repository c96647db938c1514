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
    data_dir = short_cooldown.session(identifier).data_dir
    wait_until(lambda: identifier not in short_cooldown.session_identifiers(), 10)
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
    instance = emu.instance_id
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


class _Process:
    """A worker process stand-in: a real process, with a protocol pipe the test also writes to."""

    def __init__(self, reply_pipe: int) -> None:
        self._proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)  # fmt: skip
        self.pid, self.stdin, self.stderr = self._proc.pid, self._proc.stdin, self._proc.stderr
        os.set_blocking(self.stderr.fileno(), False)  # as a forked worker's log pipe
        self.stdout = open(reply_pipe, "rb", buffering=0)  # noqa: SIM115  (the worker handle closes it)

    def poll(self):
        return self._proc.poll()

    def wait(self, timeout=None):
        return self._proc.wait(timeout)

    def kill(self):
        self._proc.kill()


def test_a_killed_worker_keeps_its_pipes_until_its_reader_leaves(tmp_path):
    """A worker killed from another thread (its session deleted) while a cell waits for its reply: the reply pipe
    stays open until that reader leaves, or its number would go to the next worker's pipe and the reader would take
    that worker's replies (a fresh session then hangs until its timeout)."""
    from azure_sessions.emulator.inside.protocol import Interrupt
    from azure_sessions.emulator.tiers import BubblewrapTier
    from azure_sessions.emulator.workers import Spawned, WorkerLost, WorkerProcess

    replies_r, replies_w = os.pipe()  # the test keeps the write end: the reader sees no end when the process dies
    process = _Process(replies_r)
    worker = WorkerProcess(Spawned(process, "guid", tmp_path, tmp_path, None, BubblewrapTier()))
    outcome: queue.Queue = queue.Queue()

    def run_cell() -> None:
        try:
            outcome.put(worker.execute("import time; time.sleep(30)", timeout=30))
        except WorkerLost as exc:
            outcome.put(exc)

    reader = threading.Thread(target=run_cell)
    reader.start()
    wait_until(lambda: "_recv" in _function_names(reader), what="the cell waits for its reply")
    worker.kill()
    assert not process.stdout.closed  # its number is still taken while the reader polls it
    with pytest.raises(WorkerLost):  # and nothing more is written to the pipes of a killed worker
        worker._send(Interrupt(id="x"))
    os.close(replies_w)
    assert isinstance(outcome.get(timeout=10), WorkerLost)
    reader.join(timeout=10)
    assert process.stdout.closed and process.stdin.closed  # the last user closed them


def _function_names(thread: threading.Thread) -> set[str]:
    frame, names = sys._current_frames().get(thread.ident), set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_removing_a_tree_another_cleanup_removed_leaves_its_parent_alone(tmp_path, monkeypatch):
    """A deleted session's worker is cleaned up by the delete and by its lost cell at once: the one that finds the
    tree gone must not touch the directory every session's tree lives in (made 0700, no worker could enter it)."""
    from azure_sessions.emulator.workers import _rmtree

    parent = tmp_path / "scratch"
    tree = parent / "session"
    (tree / "tmp").mkdir(parents=True)
    parent.chmod(0o755)
    real_rmdir = os.rmdir

    def raced(path, *args, **kwargs):
        real_rmdir(path, *args, **kwargs)
        if os.fspath(path) == str(tree):
            raise FileNotFoundError(2, "No such file or directory", str(tree))  # the other cleanup was first

    monkeypatch.setattr(os, "rmdir", raced)
    _rmtree(tree)
    assert not tree.exists() and (parent.stat().st_mode & 0o777) == 0o755


@pytest.mark.skipif(os.geteuid() == 0, reason="root removes what it likes: no permission to restore")
def test_a_tree_whose_code_locked_a_directory_is_removed_without_following_its_links(tmp_path):
    from azure_sessions.emulator.workers import _rmtree

    outside = tmp_path / "host-file"
    outside.write_text("host")
    outside.chmod(0o644)
    tree = tmp_path / "session"
    locked = tree / "locked"
    locked.mkdir(parents=True)
    (locked / "link").symlink_to(outside)  # alone: the first entry that cannot be unlinked
    locked.chmod(0o500)  # what session code may do: nothing in it can be unlinked until it is writable again
    (tree / "data.txt").write_text("x")
    _rmtree(tree)
    assert not tree.exists()
    assert (outside.stat().st_mode & 0o777) == 0o644 and outside.read_text() == "host"
