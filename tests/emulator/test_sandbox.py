"""Sandbox properties of each isolating tier (bubblewrap, Landlock): the project's environment, no network,
read-only system, no host secrets, private /mnt/data and /tmp, limits.

Each tier reaches the same guarantees by other means (namespaces and mounts; Landlock rules and seccomp), so where the
symptom differs (a path hidden by a mount is "not found", one refused by Landlock is "permission denied") the test
says which it expects.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.emulator.conftest import new_id
from tests.support.probes import ATTEMPT, UNSIGNALLABLE, checkout_out_of_reach, unreachable

SECRET_NAME = "EMULATOR_TEST_SECRET"
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"
CHECKOUT = Path(__file__).resolve().parents[2]
PROMISED_PACKAGES = {"IPython": "ipython", "numpy": "numpy", "pandas": "pandas", "matplotlib": "matplotlib",
                     "PIL": "pillow"}  # fmt: skip


@pytest.fixture(scope="module", params=["bubblewrap", "landlock"])
def tier(request) -> SimpleNamespace:
    emulator = request.getfixturevalue(f"{request.param}_emulator")
    api = request.getfixturevalue("api" if request.param == "bubblewrap" else "landlock_api")
    assert emulator.sandbox_mode == request.param and emulator.isolated and emulator.isolation_warning is None
    return SimpleNamespace(name=request.param, emu=emulator, api=api, shared=new_id())


def test_the_sandbox_runs_this_environment_with_every_promised_package(tier):
    code = (
        "import importlib, sys\n"
        f"(sys.prefix, {{name: importlib.import_module(name).__version__ for name in {sorted(PROMISED_PACKAGES)!r}}})"
    )
    result = tier.api.run(tier.shared, code)
    assert result["status"] == "Succeeded", result["stderr"]
    prefix, versions = ast.literal_eval(result["executionResult"])
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)  # the venv, not the machine's base interpreter
    assert versions == {name: importlib.metadata.version(dist) for name, dist in PROMISED_PACKAGES.items()}


def test_no_network_even_to_a_host_loopback_port(tier):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        code = ATTEMPT + (
            "import socket\n"
            f"[attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2).close() or 'connected'),\n"
            " attempt(lambda: socket.create_connection(('1.1.1.1', 53), timeout=2).close() or 'connected'),\n"
            " attempt(lambda: socket.create_connection(('example.com', 80), timeout=2).close() or 'connected'),\n"
            " attempt(lambda: sorted(n for _, n in socket.if_nameindex()))]"
        )
        outcome = ast.literal_eval(tier.api.run(tier.shared, code)["executionResult"])
        assert "connected" not in outcome, outcome
        assert accepted == []
        # bubblewrap: a network namespace with loopback only; Landlock: seccomp refuses every socket
        assert outcome[3] == (["lo"] if tier.name == "bubblewrap" else "PermissionError"), outcome
    finally:
        listener.close()


def test_root_filesystem_is_read_only(tier):
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
    outcome = tier.api.run(tier.shared, code)["executionResult"]
    assert "written" not in outcome, outcome
    assert not os.path.exists("/var/tmp/evil") and not os.path.exists("/usr/evil")
    writable = tier.api.run(tier.shared, "open('/tmp/ok', 'w').write('x'); open('/mnt/data/ok', 'w').write('y')")
    assert writable["status"] == "Succeeded"
    assert not os.path.exists("/tmp/ok")  # the session's own /tmp, not the host's


def test_environment_is_empty_of_host_secrets(tier, monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    identifier = new_id()  # a worker started after the secret was set in the server process
    env = tier.api.run(identifier, "import os; dict(os.environ)")["executionResult"]
    assert SECRET_VALUE not in env and SECRET_NAME not in env
    expected = ["HOME", "LANG", "MPLBACKEND", "PATH", "TERM", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                "AZURE_SESSIONS_EMULATOR_INSTANCE"]  # fmt: skip
    assert tier.api.run(identifier, "import os; sorted(os.environ)")["executionResult"] == str(sorted(expected))
    grep = tier.api.run(identifier, f"!grep -rs {SECRET_VALUE} /proc/*/environ; echo done")
    assert grep["stdout"] == "done\n"


def test_host_processes_homes_and_checkout_are_out_of_reach(tier):
    server_pid = os.getpid()
    code = ATTEMPT + (
        "import os\n"
        f"[attempt(lambda: open('/proc/{server_pid}/environ', 'rb').read()[:0] or 'read'),\n"
        f" attempt(lambda: os.kill({server_pid}, 0) or 'signalled'),\n"
        f" attempt(lambda: open({str(CHECKOUT / 'app.py')!r}).read()[:0] or 'read'),\n"
        f" attempt(lambda: os.listdir({str(CHECKOUT)!r})),\n"
        " attempt(lambda: os.listdir('/root')), attempt(lambda: os.listdir('/home')), os.getpid()]"
    )
    environ, signalled, app, checkout, roots, homes, pid = ast.literal_eval(
        tier.api.run(tier.shared, code)["executionResult"]
    )
    assert environ != "read" and signalled != "signalled" and app != "read"
    if tier.name == "bubblewrap":  # its own PID namespace; of the host's files only the allow-list is there
        assert pid < 10 and environ == "FileNotFoundError" and signalled == "ProcessLookupError"
        python_dirs = {Path(p).parts[2] for p in (sys.base_prefix, sys.prefix) if Path(p).parts[1] in ("root", "home")}
        for listing in (roots, homes):  # absent, or only the way to the interpreter
            assert unreachable(listing) or set(listing) <= python_dirs, listing
        assert checkout_out_of_reach(checkout), checkout
    else:  # Landlock refuses every path it was not given, /proc included (a checkout below /tmp, which the tier
        # maps to the session's scratch directory, is not there at all); its signal scope keeps the server out
        assert unreachable(environ, app, roots, homes) and checkout_out_of_reach(checkout), (app, checkout)
        assert signalled in UNSIGNALLABLE


def test_mnt_data_and_tmp_are_private_to_each_session(tier):
    alice, bob = new_id(), new_id()
    tier.api.run(alice, "open('/mnt/data/alice.txt', 'w').write('a'); open('/tmp/alice.tmp', 'w').write('t')")
    alice_dir = tier.emu.session(alice).data_dir
    code = ATTEMPT + (
        "import os, glob\n"
        f"(os.listdir('/mnt/data'), os.listdir('/tmp'), attempt(lambda: open({str(alice_dir / 'alice.txt')!r}).read()),\n"
        f" attempt(lambda: os.listdir({str(alice_dir.parent)!r})), attempt(lambda: os.listdir({str(tier.emu.data_root)!r})),\n"
        "  glob.glob('/tmp/**/alice.*', recursive=True))"
    )
    mnt, tmp, read_other, list_sessions, list_root, found = ast.literal_eval(
        tier.api.run(bob, code)["executionResult"]
    )
    assert (mnt, found) == ([], []) and "alice.tmp" not in tmp
    assert {read_other, list_sessions, list_root} <= {"FileNotFoundError", "PermissionError"}
    # Below Python (a subprocess: no /mnt/data or /tmp mapping there): hidden by mounts, or refused by Landlock
    script = f"cat {alice_dir / 'alice.txt'}; ls {alice_dir.parent}; ls {tier.emu.data_root}"
    shell = tier.api.run(bob, f"import subprocess\nprint(subprocess.run(['sh', '-c', {script!r}], capture_output=True,"
                         " text=True).stderr)")  # fmt: skip
    denial = "No such file or directory" if tier.name == "bubblewrap" else "Permission denied"
    assert shell["stdout"].count(denial) == 3, shell["stdout"]


def test_process_limit_contains_a_fork_bomb(tier):
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
    result = tier.api.run(identifier, code, timeout=30)
    assert result["executionResult"] == "(True, 'BlockingIOError')", result
    tier.api.request("DELETE", "session", identifier, "2025-02-02-preview")


def test_memory_limit_gives_memory_error(tier):
    result = tier.api.run(tier.shared, "x = bytearray(8 * 1024 ** 3)")
    assert result["status"] == "Failed" and "MemoryError" in result["stderr"]
    assert tier.api.run(tier.shared, "1 + 1")["executionResult"] == 2


def test_workers_outlive_the_thread_that_started_them(bwrap_ok, tmp_path):
    """bwrap --die-with-parent is per *thread*: a worker started from a short-lived thread must survive it."""
    from azure_sessions.emulator.launcher import Launcher
    from azure_sessions.emulator.tiers import BubblewrapTier
    from azure_sessions.emulator.workers import WorkerPool

    pool = WorkerPool(Launcher(BubblewrapTier(), tmp_path), size=0)
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


# What user code can reach of the worker's set-up: every object the collector knows (frozen ones too), every
# thread's frames, and the strings they hold.
FIND_SETUP = """
import gc, sys
key = "_".join(["protected", "pids"])  # never whole in this cell's own text, which the shell keeps
protected = [int(pid) for pid in {protected!r}.split()]
config_keys = {{"data" + "_dir", "lim" + "its"}}
gc.unfreeze()
found = set()
def suspicious(obj):
    kind = type(obj).__name__
    if kind in ("WorkerConfig", "Confinement", "Fork"):
        return kind
    if isinstance(obj, dict) and (isinstance(obj.get(key), list) or (config_keys <= obj.keys()
                                                                      and isinstance(obj.get("data_dir"), str))):
        return "a configuration dict"  # (not the classes' own field tables: their values are types)
    if isinstance(obj, (list, tuple)) and obj is not protected and list(obj) == protected:
        return "the server's pids"
    if isinstance(obj, (str, bytes)) and key + '":' in (obj if isinstance(obj, str) else obj.decode("latin-1")):
        return "a configuration's JSON"
    return None
def check(obj, where):
    what = suspicious(obj)
    if what:
        found.add(f"{{what}} in {{where}}")
for obj in gc.get_objects():
    check(obj, type(obj).__name__)
    members = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for item in list(members):
        if isinstance(item, (str, bytes)):
            check(item, type(obj).__name__)
for frame in sys._current_frames().values():
    while frame is not None:
        for value in list(frame.f_locals.values()):
            check(value, frame.f_code.co_name)
        frame = frame.f_back
check(sys.argv, "sys.argv")
sorted(found)
"""


def test_user_code_finds_neither_the_workers_configuration_nor_the_servers_pids(tier):
    """The configuration (with the server's pid and process group, in the Landlock tier) is consumed while the
    worker sets itself up, then dropped: nothing user code can reach holds it."""
    protected = " ".join(str(pid) for pid in sorted({os.getpid(), os.getpgid(0)}))
    result = tier.api.run(new_id(), FIND_SETUP.format(protected=protected), timeout=120)
    assert result["status"] == "Succeeded", result["stderr"]
    assert ast.literal_eval(result["executionResult"]) == [], result["executionResult"]


def test_the_landlock_probe_blames_a_containers_seccomp_profile_not_the_kernel():
    """Under the filter a locked-down container applies (tests/support/locked_down.py: Landlock's calls refused),
    the Landlock tier's refusal names the seccomp profile and what to allow, not a kernel without Landlock."""
    import subprocess

    from azure_sessions.emulator.inside.confine import landlock_abi
    from tests.support.locked_down import without_isolation_tiers

    if landlock_abi() == 0:
        pytest.skip("this kernel has no Landlock: a filter in front of it proves nothing")
    probe = "from azure_sessions.emulator.tiers import LandlockTier; print(LandlockTier.problem())"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=CHECKOUT, capture_output=True, text=True, timeout=60,
                          preexec_fn=without_isolation_tiers())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "seccomp profile" in proc.stdout and "landlock_create_ruleset" in proc.stdout, proc.stdout
    assert "offers no Landlock" not in proc.stdout and "predates" not in proc.stdout
