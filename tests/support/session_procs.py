"""Session processes for the tests of the seccomp policy, the process supervisor and the watchdog: real processes,
each in a session of its own, with the policy applied as a worker applies it (``session_process.py``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import azure_sessions.emulator as emulator_package
from azure_sessions.emulator.tiers import ISOLATING, UnisolatedTier

POLICY = Path(emulator_package.__file__).parent / "inside" / "policy.py"
RUNNER = Path(__file__).with_name("session_process.py")
PROBES = Path(__file__).with_name("policy_probes.py")
TIERS = {tier.name: tier for tier in (*ISOLATING, UnisolatedTier)}
"""The tier classes by name: each declares its seccomp rules."""
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}


def start_session(
    code: str,
    *,
    tier: str | None = "landlock",
    signal_scope: bool = False,
    protected: list[int] | None = None,
    supervisor: Any = None,
    cap: int = 64,
    key: object = None,
    notify: bool = False,
    args: dict | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
) -> subprocess.Popen:
    """Start a session process running ``code`` under ``tier``'s policy (None: no policy). With ``supervisor`` (a
    ``ProcessSupervisor``) its process-creating calls are capped at ``cap`` tasks, watched under ``key`` (default:
    its pid); with ``notify`` and no supervisor, the host's end of the socket its listener comes by is
    ``proc.channel``, for the test to hold."""
    rules = list(TIERS[tier].seccomp.scoped(signal_scope)) if tier else None
    spec: dict[str, Any] = {"policy": str(POLICY), "rules": rules,
                            "protected": protected or [], "code": code, "args": args or {}}  # fmt: skip
    ours = theirs = None
    if supervisor is not None or notify:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec["notify_fd"] = theirs.fileno()
    try:
        proc = subprocess.Popen([sys.executable, "-I", str(RUNNER), json.dumps(spec)], stdout=stdout,
                                stderr=subprocess.PIPE, stdin=stdin, env=ENV, start_new_session=True,
                                pass_fds=[theirs.fileno()] if theirs else [])  # fmt: skip
    finally:
        if theirs is not None:
            theirs.close()
    if supervisor is not None:
        supervisor.watch(proc.pid if key is None else key, ours, proc.pid, cap)
    proc.channel = None if supervisor is not None else ours
    return proc


def run_session(code: str, timeout: float = 120, **kwargs: Any) -> Any:
    """Run a session process to its end; returns the value of its last ``report(...)``."""
    proc = start_session(code, **kwargs)
    out, err = proc.communicate(timeout=timeout)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0 and lines, f"session process failed ({proc.returncode}): {err.decode()[-3000:]}"
    return json.loads(lines[-1])


def probe_code(names: list[str] | None, context: dict) -> str:
    """Session code that runs the named probes of ``policy_probes.py`` (all when None) and reports their results."""
    return (
        "import importlib.util\n"
        f"loader = importlib.util.spec_from_file_location('policy_probes', {str(PROBES)!r})\n"
        "probes = importlib.util.module_from_spec(loader); loader.loader.exec_module(probes)\n"
        f"report(probes.run({names!r}, {context!r}))\n"
    )


def read_line(proc: subprocess.Popen) -> Any:
    """The next JSON line a running session process reports."""
    line = proc.stdout.readline()
    assert line, f"the session process ended ({proc.poll()}): {proc.stderr.read().decode()[-3000:]}"
    return json.loads(line)


def end_session(proc: subprocess.Popen) -> None:
    """Kill every process of the session ``proc`` leads, and collect ``proc``."""
    from azure_sessions.emulator.inside import strays

    strays.end_processes(strays.in_session(proc.pid))
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def waiting_for_an_answer(pid: int) -> bool:
    """Whether ``pid`` is blocked in a call its seccomp filter sent to a supervisor."""
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            return fh.read().startswith("seccomp")
    except OSError:
        return False


SERVER = """
import os, threading, time
threading.Thread(target=lambda: (print(threading.get_native_id(), flush=True), time.sleep(600)), daemon=True).start()
time.sleep(600)
"""


def sacrificial_process() -> subprocess.Popen:
    """A process of this uid, in a session and process group of its own, for probes to aim at (the 'server'); its
    ``thread`` is the id of its second thread."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", SERVER], start_new_session=True, env=ENV,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    proc.thread = int(proc.stdout.readline())
    return proc


WORKLOAD = """
import asyncio, concurrent.futures, io, multiprocessing, os, resource, subprocess, tempfile, threading
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.core.interactiveshell import InteractiveShell

done = []
a = np.random.default_rng(0).random((600, 600))
assert (a @ a).shape == (600, 600); done.append("numpy")
frame = pd.DataFrame({"x": range(1000), "y": np.arange(1000) % 7})
assert int(frame.groupby("y").x.sum().sum()) == 499500; done.append("pandas")
figure = plt.figure(); plt.plot([1, 2, 3]); image = io.BytesIO(); figure.savefig(image, format="png")
assert image.getvalue().startswith(b"\\x89PNG"); done.append("matplotlib")
assert subprocess.run(["true"]).returncode == 0
# bash, as the worker's ! commands: dash's SIGCHLD handler lacks SA_RESTART, and under the process cap answered by
# user notification a fork it makes can fail with EINTR (supervisor.py); bash's restarts.
shell = subprocess.run("echo hi | cat; sleep 0.01 & wait; echo $((6 * 7))", shell=True, capture_output=True, text=True,
                       executable="/bin/bash")
assert shell.stdout.split() == ["hi", "42"], shell; done.append("subprocess")
seen = []
threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    assert sum(pool.map(abs, range(-5, 5))) == 25
assert len(seen) == 8; done.append("threading")
async def child():
    proc = await asyncio.create_subprocess_exec("echo", "async", stdout=asyncio.subprocess.PIPE)
    return (await proc.communicate())[0]
assert asyncio.run(child()) == b"async\\n"; done.append("asyncio")
before = os.nice(0); assert os.nice(1) == before + 1; done.append("os.nice")
assert os.cpu_count() >= 1 and len(os.sched_getaffinity(0)) >= 1; done.append("cpu count")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(soft, 512); done.append("setrlimit")
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
done.append("multiprocessing")
outcome = InteractiveShell.instance().run_cell("sum(range(10))", store_history=False)
assert outcome.result == 45; done.append("IPython")
with tempfile.TemporaryDirectory() as scratch:
    open(os.path.join(scratch, "f"), "w").write("x")
done.append("files")
report(done)
"""
"""Session code: what Python, numpy, pandas, matplotlib, subprocess, threads, asyncio, multiprocessing and IPython
need of the kernel. Reports the names of the parts that worked."""
WORKLOAD_PARTS = ["numpy", "pandas", "matplotlib", "subprocess", "threading", "asyncio", "os.nice", "cpu count",
                  "setrlimit", "multiprocessing", "IPython", "files"]  # fmt: skip
