"""Session behaviour over HTTP: state, IPython features, images, timeouts, crashes, isolation, concurrency."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from azure_sessions.dialects import SESSION_ROUTE_VERSION
from tests.emulator.conftest import new_id
from tests.support.harness import wait_until


@pytest.fixture(scope="module")
def shared_id() -> str:
    return new_id()


def test_state_persists_across_calls(api, shared_id):
    first = api.run(shared_id, "import math\ncounter = 41")
    second = api.run(shared_id, "counter += 1\nmath.floor(counter + 0.5)")
    assert second["executionResult"] == 42 and first["guid"] == second["guid"]
    assert api.run(shared_id, "def f(x):\n    return x * 2\n")["status"] == "Succeeded"
    assert api.run(shared_id, "f(counter)")["executionResult"] == 84


def test_ipython_shell_escape_and_magics(api, shared_id):
    assert api.run(shared_id, "!echo shell-says-hi")["stdout"] == "shell-says-hi\n"
    assert api.run(shared_id, "name = 'vars'\n!echo $name")["stdout"] == "vars\n"
    assert api.run(shared_id, "%pwd")["executionResult"] == "/mnt/data"
    listing = api.run(shared_id, "files = !ls /usr\n'bin' in files")
    assert listing["executionResult"] is True
    timed = api.run(shared_id, "%timeit -n1 -r1 sum(range(10))")
    assert "loop" in timed["stdout"]
    assert api.run(shared_id, "import os; os.system('echo from-os-system')")["stdout"] == "from-os-system\n"


def test_stdout_and_stderr_are_separated(api, shared_id):
    result = api.run(shared_id, "import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert (result["stdout"], result["stderr"], result["status"]) == ("out\n", "err\n", "Succeeded")


def test_non_utf8_and_large_output(api, shared_id):
    result = api.run(shared_id, "import sys; sys.stdout.buffer.write(b'\\xff\\xfeok\\n'); sys.stdout.flush()")
    assert result["stdout"].endswith("ok\n")
    big = api.run(shared_id, "print('y' * 3_000_000)")
    assert big["status"] == "Succeeded" and "truncated by the emulator" in big["stdout"]
    assert len(big["stdout"]) < 1_100_000


def test_matplotlib_figure_is_an_image_result(api, shared_id):
    from PIL import Image

    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('demo')\nplt.show()"
    for version in ("2024-02-02-preview", "2024-10-02-preview"):
        response = api.execute(shared_id, code, version=version).json()
        value = response["properties"]["result"] if "properties" in response else response["result"]["executionResult"]
        assert set(value) == {"type", "format", "base64_data"}
        assert (value["type"], value["format"]) == ("image", "png")
        image = Image.open(io.BytesIO(base64.b64decode(value["base64_data"])))
        assert image.format == "PNG" and image.size[0] > 100
    after = api.run(shared_id, "len(plt.get_fignums())")
    assert after["executionResult"] == 0  # figures are closed once shown, like the inline backend


def test_pil_image_value_is_an_image_result(api, shared_id):
    value = api.run(shared_id, "from PIL import Image\nImage.new('RGB', (8, 8), 'red')")["executionResult"]
    assert value["type"] == "image" and value["format"] == "png"


def test_timeout_interrupts_and_session_survives(api, shared_id):
    api.run(shared_id, "survivor = 'still here'")
    guid = api.run(shared_id, "1")["guid"]
    started = time.monotonic()
    result = api.run(shared_id, "import time\nwhile True:\n    time.sleep(0.05)", timeout=1)
    assert time.monotonic() - started < 10
    assert result["status"] == "Failed"
    assert "KeyboardInterrupt" in result["stderr"] and "timeout of 1 seconds" in result["stderr"]
    after = api.run(shared_id, "survivor")
    assert after["executionResult"] == "still here" and after["guid"] == guid


def test_an_interrupt_inside_a_fork_is_not_dropped(api):
    """Python runs a signal's handler at the first bytecode after it, in a cell that forks in a loop nearly always an
    at-fork callback's (logging's; here the cell's own), where a KeyboardInterrupt is printed and dropped
    ("Exception ignored in: ..."): the worker defers it until ``os.fork`` returns, so the cell stops at its timeout,
    nothing is printed, and its session lives on."""
    identifier = new_id()
    guid = api.run(identifier, "kept = 1")["guid"]
    code = (
        "import os, time\n"
        "os.register_at_fork(after_in_parent=lambda: time.sleep(0.02))  # where most interrupts land\n"
        "while True:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
    )
    result = api.run(identifier, code, timeout=1)
    assert result["status"] == "Failed" and "timeout of 1 seconds" in result["stderr"], result["stderr"][-500:]
    assert "Exception ignored" not in result["stderr"]
    after = api.run(identifier, "kept")
    assert after["executionResult"] == 1 and after["guid"] == guid
    api.request("DELETE", "session", identifier, SESSION_ROUTE_VERSION)


def test_unstoppable_code_is_killed_and_session_restarts(api, emulator, monkeypatch):
    monkeypatch.setattr(emulator, "interrupt_grace", 0.5)
    identifier = new_id()
    guid = api.run(identifier, "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nx = 1")["guid"]
    result = api.run(identifier, "while True:\n    time.sleep(0.05)", timeout=1)
    assert result["status"] == "Failed" and "terminated" in result["stderr"] and "new session id" in result["stderr"]
    fresh = api.run(identifier, "'x' in dir()")
    assert fresh["executionResult"] is False and fresh["guid"] != guid


def test_interrupt_route_stops_the_running_cell_and_the_session_survives(api, shared_id):
    api.run(shared_id, "kept = 'yes'")
    guid = api.run(shared_id, "1")["guid"]
    idle = api.request("POST", ".emulator/interrupt", shared_id)
    assert idle.status_code == 200 and idle.json() == {"interrupted": False}
    replies: dict = {}
    loop = "import time\nfor i in range(60):\n    print(i)\n    time.sleep(0.5)"
    runner = threading.Thread(target=lambda: replies.update(run=api.run(shared_id, loop, timeout=100)))
    runner.start()
    wait_until(lambda: api.request("POST", ".emulator/interrupt", shared_id).json()["interrupted"], what="running")
    runner.join(timeout=10)
    assert not runner.is_alive()
    result = replies["run"]
    assert result["status"] == "Failed" and "KeyboardInterrupt" in result["stderr"]
    assert len(result["stdout"].split()) < 10  # stopped long before the loop's end
    after = api.run(shared_id, "kept")
    assert after["executionResult"] == "yes" and after["guid"] == guid


def test_interrupt_route_ends_code_that_ignores_it_by_ending_the_worker(api, emulator, monkeypatch):
    monkeypatch.setattr(emulator, "interrupt_grace", 0.5)
    identifier = new_id()
    guid = api.run(identifier, "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)")["guid"]
    replies: dict = {}
    runner = threading.Thread(
        target=lambda: replies.update(run=api.run(identifier, "while True:\n    time.sleep(0.05)", timeout=100))
    )
    runner.start()
    wait_until(lambda: api.request("POST", ".emulator/interrupt", identifier).json()["interrupted"], what="running")
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert replies["run"]["status"] == "Failed" and "did not stop within 0.5 s" in replies["run"]["stderr"]
    assert api.run(identifier, "1")["guid"] != guid


def test_worker_crash_fails_then_fresh_session(api):
    identifier = new_id()
    api.upload(identifier, "keep.txt", b"gone soon")
    guid = api.run(identifier, "x = 1")["guid"]
    crashed = api.run(identifier, "import os; os._exit(1)")
    assert crashed["status"] == "Failed" and crashed["guid"] == guid
    assert "exited unexpectedly" in crashed["stderr"] and "/mnt/data were lost" in crashed["stderr"]
    fresh = api.run(identifier, "'x' in dir()")
    assert fresh["executionResult"] is False and fresh["guid"] != guid
    assert api.request("GET", "files", identifier).json()["value"] == []


def test_segfault_is_a_failure_too(api):
    identifier = new_id()
    guid = api.run(identifier, "1")["guid"]
    crashed = api.run(identifier, "import ctypes; ctypes.string_at(0)")
    assert crashed["status"] == "Failed" and "SIGSEGV" in crashed["stderr"]
    assert api.run(identifier, "1")["guid"] != guid


def test_exit_does_not_kill_the_session(api, shared_id):
    guid = api.run(shared_id, "1")["guid"]
    assert api.run(shared_id, "exit()")["guid"] == guid
    assert api.run(shared_id, "1")["guid"] == guid


def test_two_identifiers_cannot_see_each_other(api):
    alice, bob = new_id(), new_id()
    api.run(alice, "secret = 'alice-only'\nopen('/mnt/data/alice.txt', 'w').write('private')")
    api.upload(alice, "upload.txt", b"alice upload")
    assert api.run(bob, "'secret' in dir()")["executionResult"] is False
    assert api.run(bob, "import os; sorted(os.listdir('/mnt/data'))")["executionResult"] == "[]"
    assert api.request("GET", "files", bob).json()["value"] == []
    assert api.request("GET", "files/alice.txt/content", bob).status_code == 404
    assert api.run(alice, "secret")["executionResult"] == "alice-only"


def test_sixteen_sessions_run_concurrently(api):
    identifiers = [new_id() for _ in range(16)]
    all_allocated = threading.Barrier(len(identifiers), timeout=120)

    def work(identifier: str) -> tuple[str, float, float]:
        api.run(identifier, f"marker = {identifier!r}")
        all_allocated.wait()
        started = time.monotonic()
        result = api.run(identifier, "import time; time.sleep(1); marker")
        return result["executionResult"], started, time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(work, identifiers))
    assert [value for value, _, _ in outcomes] == identifiers
    starts, ends = [s for _, s, _ in outcomes], [e for _, _, e in outcomes]
    assert max(starts) < min(ends), "the 1-second sleeps did not overlap: executions were serialized"
    for identifier in identifiers:
        api.request("DELETE", "session", identifier, "2025-02-02-preview")


def test_one_session_serializes_its_own_executions(api, shared_id):
    api.run(shared_id, "import time\nlog = []")
    code = "log.append('start'); time.sleep(0.2); log.append('end')"
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: api.run(shared_id, code), range(3)))
    assert api.run(shared_id, "log")["executionResult"] == str(["start", "end"] * 3)


@pytest.mark.parametrize("mode", ["default", "landlock", "unisolated"])
def test_mnt_data_out_csv_works_in_every_mode(request, mode):
    api = request.getfixturevalue({"default": "api", "landlock": "landlock_api", "unisolated": "unisolated_api"}[mode])
    identifier = new_id()
    code = (
        "import pandas as pd, os, pathlib\n"
        "pd.DataFrame({'v': [1, 2, 3]}).to_csv('/mnt/data/out.csv', index=False)\n"
        "pathlib.Path('/mnt/data/sub').mkdir()\n"
        "open('/mnt/data/sub/note.txt', 'w').write('hi')\n"
        "(os.getcwd(), sorted(os.listdir('/mnt/data')), int(pd.read_csv('/mnt/data/out.csv')['v'].sum()),"
        " os.path.exists('/mnt/data/sub/note.txt'))"
    )
    result = api.run(identifier, code)
    assert result["executionResult"] == "('/mnt/data', ['out.csv', 'sub'], 6, True)", result
    entries = {v["name"]: v for v in api.request("GET", "files", identifier).json()["value"]}
    assert entries["out.csv"]["sizeInBytes"] == len("v\n1\n2\n3\n") and entries["sub"]["type"] == "directory"
    assert api.request("GET", "files/out.csv/content", identifier).content == b"v\n1\n2\n3\n"
    api.upload(identifier, "in.txt", b"uploaded")
    assert api.run(identifier, "open('/mnt/data/in.txt').read()")["executionResult"] == "uploaded"
    assert api.run(identifier, "open('in.txt').read()")["executionResult"] == "uploaded"
    # C-level opens and shell commands with absolute paths (mapped where there is no mount namespace)
    database = "import sqlite3\nc = sqlite3.connect('/mnt/data/t.db'); c.execute('create table t(x)'); c.commit()"
    assert api.run(identifier, database)["status"] == "Succeeded"
    listing = api.run(identifier, "!ls /mnt/data; ls /mnt/database 2>/dev/null || echo no-such-dir")["stdout"]
    assert listing.split() == ["in.txt", "out.csv", "sub", "t.db", "no-such-dir"], listing
