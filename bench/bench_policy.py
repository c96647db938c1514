"""What a session's bounds cost: a process-creating call through the per-session cap (seccomp user notification to
the host's supervisor) against the same call under the policy alone and under no filter, and the host CPU the
watchdog spends per tick with 50 sessions.

The calls are timed inside real session processes (``tests/support/session_procs.py``), the three configurations
in rotating rounds so drifting load hits them alike: ``os.fork()`` + ``waitpid`` of a child that exits at once, and
``subprocess.run(["true"])`` (vfork + exec). The supervisor's own CPU per answered call is its thread's CPU
time spent answering, divided by the calls it answered.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from azure_sessions.emulator.budgets import SessionBudget
from azure_sessions.emulator.supervisor import ProcessSupervisor
from azure_sessions.emulator.watchdog import Watchdog
from bench.common import BenchReport, Row, Stats, cli, ms, pct, run_and_save
from tests.support.session_procs import end_session, read_line, run_session, start_session

LOOP = """
import os, subprocess, time
def forked():
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - started
def ran():
    started = time.perf_counter()
    subprocess.run(["true"])
    return time.perf_counter() - started
report({"fork": [forked() for _ in range(args["n"])], "run": [ran() for _ in range(args["n"])]})
"""
PIPELINES = """
import subprocess
failed = sum(subprocess.run("echo hi | cat > /dev/null; true | true", shell=True, capture_output=True).returncode != 0
             for _ in range(args["n"]))
report(failed)
"""
IDLE_SESSION = """
import os, time
if args["child"] and os.fork() == 0:
    time.sleep(600)
    os._exit(0)
report("started")
time.sleep(600)
"""


def clone_costs(quick: bool) -> tuple[dict[str, dict[str, list[float]]], float]:
    rounds, per_round = (2, 50) if quick else (5, 200)
    configs = ("no filter", "policy", "policy and cap")
    samples = {config: {"fork": [], "run": []} for config in configs}
    supervisor = ProcessSupervisor()
    try:
        for index in range(rounds):
            for config in configs[index % 3 :] + configs[: index % 3]:
                key = f"{config}-{index}"
                kwargs = {"tier": None if config == "no filter" else "landlock", "args": {"n": per_round}}
                if config == "policy and cap":
                    kwargs |= {"supervisor": supervisor, "key": key, "cap": 64}
                result = run_session(LOOP, **kwargs)
                if config == "policy and cap":
                    supervisor.unwatch(key)
                for kind in ("fork", "run"):
                    samples[config][kind] += [value * 1000 for value in result[kind]]
    finally:
        supervisor.close()
    return samples, supervisor.cpu_seconds * 1e6 / max(supervisor.answered, 1)


def pipeline_failures(quick: bool) -> dict[str, tuple[int, int]]:
    """``sh -c "a | b; c | d"`` runs that fail, per configuration: under user notification a fork dash makes can
    fail with EINTR when a child's SIGCHLD lands before the supervisor has received the call."""
    n = 50 if quick else 300
    outcome = {}
    for config in ("no filter", "policy", "policy and cap"):
        kwargs = {"tier": None if config == "no filter" else "landlock", "args": {"n": n}}
        supervisor = ProcessSupervisor() if config == "policy and cap" else None
        if supervisor:
            kwargs |= {"supervisor": supervisor, "cap": 10_000}
        try:
            outcome[config] = (run_session(PIPELINES, **kwargs), n)
        finally:
            if supervisor:
                supervisor.close()
    return outcome


def watchdog_ticks(quick: bool, sessions: int = 50) -> dict[str, list[float]]:
    """Host CPU per tick (ms), measured over windows of a few ticks: idle sessions (the worker alone, nothing
    running: disks every 10 s), then busy ones (disks every 1.5 s); a census of /proc and each process's statm
    every tick in both."""
    windows = 4 if quick else 15
    procs, dirs = [], []
    per_tick: dict[str, list[float]] = {"idle": [], "busy": []}
    busy = {"on": False}
    dog = Watchdog()
    try:
        for _ in range(sessions):
            directory = Path(tempfile.mkdtemp(prefix="bench-watchdog-"))
            for name in range(20):
                (directory / f"file{name}.txt").write_bytes(b"x" * 5000)
            dirs.append(directory)
            procs.append(start_session(IDLE_SESSION, args={"child": False}))
        for proc in procs:
            assert read_line(proc) == "started"
        for index, (proc, directory) in enumerate(zip(procs, dirs, strict=True)):
            dog.watch(index, worker_pid=proc.pid, dirs=[directory], budget=SessionBudget(), busy=lambda: busy["on"])
        for scenario in ("idle", "busy"):
            busy["on"] = scenario == "busy"
            time.sleep(1.0)
            for _ in range(windows):
                cpu, ticks = dog.cpu_seconds, dog.ticks
                time.sleep(2.0)
                if dog.ticks > ticks:
                    per_tick[scenario].append((dog.cpu_seconds - cpu) * 1000 / (dog.ticks - ticks))
    finally:
        dog.close()
        for proc in procs:
            end_session(proc)
        for directory in dirs:
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()
    return per_tick


def body(quick: bool) -> BenchReport:
    report = BenchReport("policy", "11. Session bounds: the process cap and the watchdog")
    samples, supervisor_us = clone_costs(quick)
    for kind, how in (("fork", "`os.fork()` + `waitpid`"), ("run", '`subprocess.run(["true"])`')):
        base = Stats.of(samples["no filter"][kind])
        for config in ("no filter", "policy", "policy and cap"):
            stats = Stats.of(samples[config][kind])
            ratio = "" if config == "no filter" else pct(stats.median / base.median - 1)
            report.rows.append(Row(f"{kind}: {config}", f"{how}, {stats.n} calls in a session process", ms(stats.median),
                                   ms(stats.p95), ratio))  # fmt: skip
    report.notes.append(
        f"The supervisor thread's CPU per answered call (receive, decide, answer; counts of /proc included): {supervisor_us:.0f} µs."
    )
    for config, (failed, n) in pipeline_failures(quick).items():
        report.rows.append(Row(f"sh pipelines failing: {config}", '`sh -c "echo hi | cat; true | true"` (dash)',
                               f"{failed} of {n}", ratio=pct(failed / n)))  # fmt: skip
    ticks = watchdog_ticks(quick)
    for scenario, values in ticks.items():
        if values:
            stats = Stats.of(values)
            share = stats.median / 1000 / 0.25
            report.rows.append(Row(f"watchdog tick, 50 {scenario} sessions", "host CPU per tick (windows of ~8 ticks)",
                                   ms(stats.median), ms(stats.p95), f"{share * 100:.1f} % of a core at 4 ticks/s"))  # fmt: skip
    report.notes.append(
        "Every tick: a census of /proc (a listing, the stat of new processes), each session's tasks and resident sizes; "
        "each session's directory (20 files) every 10 s when idle, every 1.5 s when busy."
    )
    report.notes.append(f"Median of {len(samples['policy and cap']['fork'])} calls per configuration; machine shared.")
    return report


if __name__ == "__main__":
    run_and_save("policy", body, cli(__doc__).quick)
