"""Sandbox properties under bubblewrap: no network, read-only root, no host secrets, private /mnt/data, limits."""

from __future__ import annotations

import ast
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from tests.emulator.conftest import new_id

pytestmark = [pytest.mark.bwrap, pytest.mark.usefixtures("bwrap_ok")]

SECRET_NAME = "EMULATOR_TEST_SECRET"
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"


@pytest.fixture(scope="module")
def shared_id(emulator) -> str:
    assert emulator.sandbox_mode == "bubblewrap" and emulator.isolated and emulator.isolation_warning is None
    return new_id()


def test_no_network_even_to_a_host_loopback_port(api, shared_id):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        code = (
            "import socket\n"
            "def attempt(host, port):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=2).close(); return 'connected'\n"
            "    except OSError as exc:\n"
            "        return type(exc).__name__\n"
            f"[attempt('127.0.0.1', {port}), attempt('1.1.1.1', 53), attempt('example.com', 80)]"
        )
        outcome = api.run(shared_id, code)["executionResult"]
        assert "connected" not in outcome, outcome
        assert accepted == []
        interfaces = api.run(shared_id, "import socket; sorted(n for _, n in socket.if_nameindex())")
        assert interfaces["executionResult"] == "['lo']"
    finally:
        listener.close()


def test_root_filesystem_is_read_only(api, shared_id):
    code = (
        "import errno\n"
        "out = {}\n"
        "for path in ['/usr/evil', '/etc/evil', '/var/tmp/evil', '/evil']:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); out[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        out[path] = errno.errorcode[exc.errno]\n"
        "out"
    )
    outcome = api.run(shared_id, code)["executionResult"]
    assert "written" not in outcome, outcome
    assert not os.path.exists("/var/tmp/evil") and not os.path.exists("/usr/evil")
    writable = api.run(shared_id, "open('/tmp/ok', 'w').write('x'); open('/mnt/data/ok', 'w').write('y')")
    assert writable["status"] == "Succeeded"


def test_environment_is_empty_of_host_secrets(api, shared_id, monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    identifier = new_id()  # a worker started after the secret was set in the server process
    env = api.run(identifier, "import os; dict(os.environ)")["executionResult"]
    assert SECRET_VALUE not in env and SECRET_NAME not in env
    assert api.run(identifier, "import os; sorted(os.environ)")["executionResult"] == str(
        sorted(
            [
                "HOME",
                "LANG",
                "MPLBACKEND",
                "PATH",
                "TERM",
                "TMPDIR",
                "PYTHONDONTWRITEBYTECODE",
                "PWD",
                "AZURE_SESSIONS_EMULATOR_INSTANCE",
            ]
        )
    )
    grep = api.run(identifier, f"!grep -rs {SECRET_VALUE} /proc/*/environ; echo done")
    assert grep["stdout"] == "done\n"


def test_host_processes_homes_and_checkout_are_hidden(api, shared_id):
    server_pid = os.getpid()
    visible = api.run(shared_id, f"import os; os.path.exists('/proc/{server_pid}/environ'), os.getpid() < 10")
    assert visible["executionResult"] == "(False, True)"
    code = f"import os; os.listdir('/root'), os.listdir('/home'), os.path.exists({__file__!r})"
    roots, homes, checkout_visible = ast.literal_eval(api.run(shared_id, code)["executionResult"])
    python_dirs = {Path(p).parts[2] for p in (sys.base_prefix, sys.prefix) if Path(p).parts[1] in ("root", "home")}
    assert set(roots) | set(homes) <= python_dirs  # only the way to the interpreter is bound back
    assert checkout_visible is False


def test_mnt_data_is_private_to_each_session(api, emulator):
    alice, bob = new_id(), new_id()
    api.run(alice, "open('/mnt/data/alice.txt', 'w').write('a')")
    data_root = str(emulator.data_root)
    probe = api.run(
        bob,
        f"import os, glob; os.listdir('/mnt/data'), glob.glob('/mnt/*'), os.path.exists({data_root!r}),"
        " glob.glob('/tmp/**/alice.txt', recursive=True)",
    )
    assert probe["executionResult"] == "([], ['/mnt/data'], False, [])", probe


def test_process_limit_contains_a_fork_bomb(api):
    if os.geteuid() != 0:
        pytest.skip("the per-worker process limit is per uid only when the emulator runs as root")
    identifier = new_id()
    code = (
        "import os, time\n"
        "count = 0\n"
        "try:\n"
        "    for _ in range(2000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(3); os._exit(0)\n"
        "        count += 1\n"
        "except OSError as exc:\n"
        "    stopped = type(exc).__name__\n"
        "(count < 2000, stopped)"
    )
    result = api.run(identifier, code, timeout=30)
    assert result["executionResult"] == "(True, 'BlockingIOError')", result
    api.request("DELETE", "session", identifier, "2025-02-02-preview")


def test_memory_limit_gives_memory_error(api, shared_id):
    result = api.run(shared_id, "x = bytearray(8 * 1024 ** 3)")
    assert result["status"] == "Failed" and "MemoryError" in result["stderr"]
    assert api.run(shared_id, "1 + 1")["executionResult"] == 2


def test_workers_outlive_the_thread_that_started_them(tmp_path):
    """bwrap --die-with-parent is per *thread*: a worker started from a short-lived thread must survive it."""
    from azure_sessions.emulator.sandbox import Launcher
    from azure_sessions.emulator.workers import WorkerPool

    pool = WorkerPool(Launcher("bubblewrap", tmp_path), size=0)
    started = []
    thread = threading.Thread(target=lambda: started.append(pool.acquire()))
    thread.start()
    thread.join()
    worker = started[0]
    try:
        assert worker.alive and worker.execute("print('alive')", 10).stdout == "alive\n"
    finally:
        worker.cleanup()
        pool.close()
