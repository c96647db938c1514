"""Visitors at the protocol level: N simulated visitors drive the app at once through Gradio's own HTTP/SSE protocol
(bench/visitor.py: what a tab sends, with no browser competing for the cores), each with a new tab, hence a new
sandbox session, and the scripted 3-step task of the browser benchmark (bench_app: numpy, a matplotlib plot, a final
answer; the scripted model streams each step's reply in a few chunks 0.1 s apart, about 1.5 s of model time per
task, no inference).

- one visitor alone, several times: the median time from sending the task to its final answer;
- 1, 5, 10 and 20 visitors at once: the median and p95 of the same, against the single visitor's median;
- where the CPU goes in each round: the app server, the sandboxes (the template and its workers), the visitors.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.app_support import MODEL_LABEL, TASK, AppProcess, cpu_snapshot
from bench.common import BenchReport, Row, Stats, bar_chart, cli, latency_chart, ms, run_and_save
from bench.visitor import Visitor

TARGET_RATIO = 2.0
Round = tuple[list[dict], dict[str, float], float]  # results, CPU seconds by group, wall seconds


def visit(url: str, config: dict, tag: str, start: threading.Barrier | None = None) -> dict:
    """One visitor: opens a tab, waits for the others, sends the task, waits for its final answer, closes the tab."""
    visitor = Visitor(url, config)
    try:
        visitor.open()
        if start is not None:
            start.wait()
        message = {"text": TASK.format(tag=tag), "files": []}
        model = visitor.choice("model-picker", MODEL_LABEL)
        run = visitor.trigger("chat-input", "submit", **{"chat-input": message, "model-picker": model})
        done = run.completed is not None and run.success and "sample mean" in run.text()
        return {"failed": not done, "done": ((run.completed or time.perf_counter()) - run.sent) * 1000.0,
                "first": ((run.first_update or run.sent) - run.sent) * 1000.0}  # fmt: skip
    finally:
        visitor.close()


def cpu_round(app: AppProcess, run: callable) -> Round:
    """Run ``run()``; returns its results, CPU seconds by part of the system, and the wall time."""
    before, mine = cpu_snapshot(), resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    results = run()
    wall = time.perf_counter() - began
    after, mine_after = cpu_snapshot(), resource.getrusage(resource.RUSAGE_SELF)
    groups = {"app server": 0.0, "sandboxes": 0.0}

    def descends(pid: int) -> bool:
        for _ in range(64):
            pid = after.get(pid, (0, 0.0))[0]
            if pid == app.proc.pid:
                return True
            if pid <= 1:
                return False
        return False

    for pid, (_, cpu) in after.items():
        spent = cpu - before.get(pid, (0, 0.0))[1]
        if pid == app.proc.pid:
            groups["app server"] += spent
        elif descends(pid):
            groups["sandboxes"] += spent
    groups["visitors (this process)"] = (mine_after.ru_utime + mine_after.ru_stime) - (mine.ru_utime + mine.ru_stime)
    return results, groups, wall


def measure(singles: int, levels: tuple[int, ...]) -> tuple[list[dict], dict[int, Round], str]:
    """`singles` visits one after the other, then a round of N visitors at once for each N of `levels`; returns the
    lone visits, the rounds by N, and the sandbox tier."""
    app = AppProcess()
    try:
        config = requests.get(app.url + "config", timeout=30).json()
        app.wait_pool()
        alone = [visit(app.url, config, f"single{i}") for i in range(singles)]
        rounds: dict[int, Round] = {}
        for n in levels:
            app.wait_pool()
            start = threading.Barrier(n)
            with ThreadPoolExecutor(n) as pool:
                rounds[n] = cpu_round(
                    app,
                    lambda n=n, start=start: list(
                        pool.map(lambda i: visit(app.url, config, f"n{n}v{i}", start), range(n))
                    ),
                )
    finally:
        app.close()
    return alone, rounds, app.sandbox


def body(quick: bool) -> BenchReport:
    singles, levels = (2, (1, 3)) if quick else (8, (1, 5, 10, 20))
    report = BenchReport("load", "7. Visitors at the protocol level")
    alone, rounds, sandbox = measure(singles, levels)
    base = Stats.of([r["done"] for r in alone if not r["failed"]])
    report.rows.append(
        Row(
            "3-step task, one visitor alone (new session)",
            f"{singles} visits one after the other; send → answer",
            ms(base.median),
            ms(base.p95),
            "1× (baseline)",
        )
    )
    failures = sum(r["failed"] for r in alone)
    for n, (results, cpu, wall) in rounds.items():
        done = Stats.of([r["done"] for r in results])
        first = Stats.of([r["first"] for r in results])
        failures += sum(r["failed"] for r in results)
        ratio = done.p95 / base.median
        target = {"target": f"p95 ≤ {TARGET_RATIO:g}× alone", "met": ratio <= TARGET_RATIO} if n == 10 else {}
        spent = sum(cpu.values())
        report.rows.append(
            Row(
                f"3-step task, {n} visitor{'s' * (n > 1)} at once",
                f"send → final answer; first step streamed p50 {ms(first.median)}",
                ms(done.median),
                ms(done.p95),
                f"{ratio:.2f}× (p95 vs alone)",
                **target,
            )
        )
        report.notes.append(
            f"{n} at once: {wall:.1f} s wall, {spent:.1f} CPU-seconds of {2 * wall:.0f} available on 2 cores: "
            + ", ".join(f"{name} {value:.1f} s ({value / spent:.0%})" for name, value in cpu.items())
            + f"; {spent / n:.2f} CPU-s per task."
        )
    report.rows.append(Row("failed runs", "no final answer, or an error", str(failures), "", "", "0", failures == 0))
    report.notes += [
        "Each visitor is a new tab (heartbeat stream, load events) and so a new sandbox session from the app's "
        "embedded emulator, with its default pool of pre-started sandboxes; beyond the pool a session is forked "
        "from the template. The browser benchmark (section 6) runs the same task in real tabs.",
        f"Sandbox tier: {sandbox}. {os.cpu_count()} cores shared by the app, its sandboxes and the visitors.",
    ]
    report.charts += [
        latency_chart("load_latency", "send → final answer, by visitors at once",
                      {"alone": [r["done"] for r in alone],
                       **{f"{n} at once": [r["done"] for r in rounds[n][0]] for n in levels}}),
        bar_chart("load_cpu", f"CPU seconds, {levels[-1]} visitors at once", rounds[levels[-1]][1], "CPU seconds"),
    ]  # fmt: skip
    return report


if __name__ == "__main__":
    args = cli(__doc__ or "")
    run_and_save("load", body, args.quick)
