"""Emulator latency and throughput, through SessionsClient, the emulator in its own process (bubblewrap sandbox when
the machine allows it):

- first call on a new identifier, after the pre-started worker pool has refilled (a real user pauses between new
  sessions; the pause itself is reported);
- warm `print(1)` on one session;
- a pandas + matplotlib cell that draws a plot (the image comes back as the result);
- throughput (executions/s) of `print(1)` with 1, 4 and 16 sessions running at once, one client thread each;
- Stop: from `interrupt()` to the interrupted execution's reply, for a loop that would run for a minute;
- per isolation tier (bubblewrap; Landlock and seccomp, the tier of hosts without user namespaces), each in an
  emulator of its own with no warm pool: a new session's first `print(1)` alone and in a burst of 16, warm
  `print(1)`, and the unique memory (USS) of idle sessions forked from the template;
- side by side, how a worker started before the template: a fresh interpreter importing the same libraries.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from azure_sessions import SessionsClient
from bench.common import BenchReport, Row, Stats, bar_chart, cli, latency_chart, ms, run_and_save, time_calls, times
from bench.server import EmulatorProcess, smaps_kb

PLOT_CELL = """\
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
df = pd.DataFrame({"day": np.arange(365), "value": np.random.default_rng(7).normal(size=365).cumsum()})
df["rolling"] = df["value"].rolling(30).mean()
ax = df.plot(x="day", y=["value", "rolling"], figsize=(7, 3), title="random walk")
plt.tight_layout()
plt.show()
"""


def first_calls(emu: EmulatorProcess, samples: int, pause: float) -> tuple[list[float], list[float]]:
    """Time the first execute on a fresh identifier, each after the pool refilled; returns (latencies, waits)."""
    latencies, waits = [], []
    for _ in range(samples):
        waits.append(emu.wait_pool())
        time.sleep(pause)
        with SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token) as client:
            start = time.perf_counter()
            result = client.execute("print(1)")
            latencies.append((time.perf_counter() - start) * 1000.0)
            assert result.stdout == "1\n", result
            client.delete_session()
    return latencies, waits


LOOP_CELL = "import time\nfor i in range(60):\n    print(i)\n    time.sleep(1)"


def interrupt_latencies(client: SessionsClient, samples: int) -> list[float]:
    """Start a minute-long loop, let it run, interrupt it: milliseconds from the call to the execution's reply."""
    latencies = []
    for _ in range(samples):
        replied: dict[str, float] = {}

        def run(replied: dict[str, float] = replied) -> None:
            result = client.execute(LOOP_CELL, timeout=120)
            replied["at"] = time.perf_counter()
            assert "KeyboardInterrupt" in result.stderr, result

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(1.5)  # the loop is running, as when a user clicks Stop
        start = time.perf_counter()
        assert client.interrupt(), "nothing was running"
        thread.join(timeout=30)
        latencies.append((replied["at"] - start) * 1000.0)
    return latencies


def throughput(clients: list[SessionsClient], seconds: float) -> tuple[float, list[float]]:
    """Each client runs print(1) in a loop in its own thread for `seconds`; returns (executions/s, latencies)."""
    barrier = threading.Barrier(len(clients) + 1)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in clients]

    def loop(index: int) -> None:
        client = clients[index]
        barrier.wait()
        while not stop.is_set():
            start = time.perf_counter()
            client.execute("print(1)")
            latencies[index].append((time.perf_counter() - start) * 1000.0)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    flat = [value for sample in latencies for value in sample]
    return len(flat) / elapsed, flat


FRESH_WORKER = "import IPython, numpy, pandas, matplotlib.pyplot; print(1, flush=True); import time; time.sleep(1)"
"""How a worker started before the template: a fresh interpreter importing what the sandbox preloads."""


def fresh_interpreter(n: int, burst: int) -> tuple[list[float], list[float], float]:
    """The baseline, side by side: a fresh interpreter's start to its first output, alone (n times) and ``burst``
    at once; and the unique memory (MiB) one holds once started."""

    def start() -> tuple[float, float]:
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-I", "-c", FRESH_WORKER], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
        elapsed = (time.perf_counter() - began) * 1000.0
        uss = smaps_kb(proc.pid)["uss"] / 1024
        proc.wait()
        return elapsed, uss

    alone = [start() for _ in range(n)]
    with ThreadPoolExecutor(burst) as pool:
        together = list(pool.map(lambda _: start()[0], range(burst)))
    return [t for t, _ in alone], together, statistics.median(u for _, u in alone)


def tier_rows(tier: str, quick: bool, fresh_burst_ms: float) -> tuple[list[Row], dict[str, list[float]]]:
    """New sessions forked from the template with no warm pool, alone and in a burst (against ``fresh_burst_ms``,
    the median of as many fresh interpreters started at once); warm print(1); the unique memory of idle sessions; in
    an emulator that must use ``tier``."""
    from azure_sessions.emulator.tiers import tier_for_choice

    kind = tier_for_choice(tier)
    problem, label = kind.problem(), kind.label
    if problem:
        return [Row(f"{label} tier", f"not measured: {problem}", "", "")], {}
    n_first, n_burst, n_warm = (3, 4, 30) if quick else (20, 16, 300)
    with EmulatorProcess(("http",), prestart=0, sandbox=tier) as emu:
        emu.wait_template()
        first = []
        for _ in range(n_first):
            with SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token) as client:
                began = time.perf_counter()
                assert client.execute("print(1)").stdout == "1\n"
                first.append((time.perf_counter() - began) * 1000.0)
                client.delete_session()
        clients = [SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token) for _ in range(n_burst)]

        def first_call(client: SessionsClient) -> float:
            began = time.perf_counter()
            assert client.execute("print(1)", timeout=120).stdout == "1\n"
            return (time.perf_counter() - began) * 1000.0

        with ThreadPoolExecutor(n_burst) as pool:
            burst = list(pool.map(first_call, clients))
        warm = time_calls(lambda: clients[0].execute("print(1)"), n_warm, warmup=5)
        time.sleep(1.0)  # idle: what a session holds between a user's messages
        memory = emu.session_memory()
        for client in clients:
            client.delete_session()
            client.close()
    f, b, w = Stats.of(first), Stats.of(burst), Stats.of(warm)
    uss = Stats.of([m["uss"] / 1024 for m in memory["workers"]])
    pss = Stats.of([m["pss"] / 1024 for m in memory["workers"]])
    template = memory["template"] or {"rss": 0, "pss": 0, "uss": 0}
    rows = [
        Row(f"{label}: new session's first `print(1)`, no warm pool", f"forked from the template, {n_first} alone",
            ms(f.median), ms(f.p95), "", "p50 ≤ 50 ms", f.median <= 50),
        Row(f"{label}: burst of {n_burst} new sessions, pool empty", "first `print(1)` of each, all at once",
            ms(b.median), ms(b.p95), f"{fresh_burst_ms / b.median:.1f}× faster than fresh interpreters",
            "p50 ≤ 300 ms, p95 ≤ 600 ms", b.median <= 300 and b.p95 <= 600),
        Row(f"{label}: warm `print(1)`", f"one session, {n_warm} calls", ms(w.median), ms(w.p95), "", "p50 ≤ 5 ms",
            w.median <= 5),
        Row(f"{label}: idle session, unique memory (USS)", f"{len(memory['workers'])} sessions after `print(1)`",
            f"{uss.median:.1f} MiB", f"{uss.p95:.1f} MiB", f"PSS {pss.median:.1f} MiB; template RSS "
            f"{template['rss'] / 1024:.0f} MiB", "≤ 30 MB", uss.median * 1.048576 <= 30),
    ]  # fmt: skip
    return rows, {f"{label}: first call, alone": first, f"{label}: first call, burst of {n_burst}": burst}


def body(quick: bool) -> BenchReport:
    n_first, n_warm, n_plot = (1, 30, 2) if quick else (10, 300, 20)
    n_stop = 2 if quick else 10
    levels, seconds = ((1, 2), 1.0) if quick else ((1, 4, 16), 6.0)
    pause = 0.5
    report = BenchReport("emulator", "3. Emulator latency and throughput")
    with EmulatorProcess(("http",), prestart=2) as emu:
        fill = emu.wait_pool()
        first, waits = first_calls(emu, n_first, pause)

        client = SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token)
        client.execute("pass")
        warm = time_calls(lambda: client.execute("print(1)"), n_warm, warmup=5)
        images = []
        plot = time_calls(lambda: images.append(len(client.execute(PLOT_CELL, timeout=120).images)), n_plot, 1)
        stop = interrupt_latencies(client, n_stop)
        client.close()
        if not all(images):
            raise RuntimeError("the plot cell returned no image")
        clients = [SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token) for _ in range(max(levels))]
        for c in clients:
            c.execute("pass")
        rates: dict[int, tuple[float, list[float]]] = {}
        for level in levels:
            rates[level] = throughput(clients[:level], seconds)
        for c in clients:
            c.delete_session()
            c.close()
        info = emu.command("info")

    f, w, p, st = Stats.of(first), Stats.of(warm), Stats.of(plot), Stats.of(stop)
    report.rows += [
        Row("first call on a new identifier", f"pool refilled before each ({n_first} samples)", ms(f.median),
            ms(f.p95), "", "p50 ≤ 100 ms", f.median <= 100),
        Row("warm `print(1)`", f"one session, {n_warm} calls", ms(w.median), ms(w.p95), "", "p50 ≤ 5 ms",
            w.median <= 5),
        Row("pandas + matplotlib cell that plots", f"warm session, {n_plot} runs, PNG returned", ms(p.median),
            ms(p.p95), times(p.median / w.median) + " warm print(1)"),
        Row("Stop: interrupt a running loop", f"`interrupt()` to the execution's reply, {n_stop} samples",
            ms(st.median), ms(st.p95), "the session keeps its state", "p95 ≤ 1 s", st.p95 <= 1000),
    ]  # fmt: skip
    n_fresh, n_fresh_burst = (2, 4) if quick else (5, 16)
    alone, together, fresh_uss = fresh_interpreter(n_fresh, n_fresh_burst)
    a, t = Stats.of(alone), Stats.of(together)
    report.rows += [
        Row("before the template: a fresh interpreter's start", f"import IPython, numpy, pandas, matplotlib; {n_fresh}"
            " alone, no sandbox", ms(a.median), ms(a.p95), f"unique memory {fresh_uss:.0f} MiB once started"),
        Row(f"before the template: {n_fresh_burst} fresh interpreters at once", "the same, all started together",
            ms(t.median), ms(t.p95), "1× (baseline for the bursts below)"),
    ]  # fmt: skip
    series = {}
    for tier in ("bubblewrap", "landlock"):
        rows, samples = tier_rows(tier, quick, fresh_burst_ms=t.median)
        report.rows += rows
        series |= samples
    base = rates[levels[0]][0]
    for level in levels:
        rate, lat = rates[level]
        s = Stats.of(lat)
        report.rows.append(
            Row(
                f"throughput, {level} concurrent session{'s' * (level > 1)}",
                f"print(1) loops for {seconds:g} s; per-call latency →",
                f"{rate:.0f} exec/s",
                "",
                f"{rate / base:.2f}× 1 session; latency p50 {ms(s.median)}, p95 {ms(s.p95)}",
            ),
        )
    report.notes += [
        f"Pre-started workers: the emulator keeps 2 ready; filling the pool at start took {fill:.1f} s (the template "
        f"prepares once, then each worker is a fork) and each refill between first-call samples took a median "
        f"{statistics.median(waits):.2f} s (then a {pause:g} s pause).",
        "The tier rows use an emulator with no warm pool at all: every new session is forked from the template "
        "(which imports IPython, numpy, pandas and matplotlib once), then given its own namespaces (bubblewrap) or "
        "confined with Landlock and seccomp, its limits and its directories, before its first cell. The fresh "
        "interpreter rows are how a worker started before: the same imports in a new process, without the sandbox's "
        "own start-up, so they flatter the old way.",
        "Unique memory (USS) is a process's private pages, the memory it alone costs; PSS adds its share of the pages "
        "it shares with the template and the other sessions.",
        f"Emulator counters at the end of the main section: {info['http']['sessions_created']} sessions created, "
        f"{info['http']['executions']} executions.",
        f"Sandbox of the main section: {emu.sandbox}. Client and emulator share the machine's cores; the throughput "
        "clients are threads of one Python process (the GIL), so the figures are a floor for the emulator.",
    ]
    report.charts += [
        latency_chart(
            "emulator_latency",
            "emulator latencies",
            {
                "first call, new identifier (pool)": first,
                "warm print(1)": warm,
                "pandas/matplotlib plot": plot,
                "fresh interpreter, alone": alone,
                f"fresh interpreters, {n_fresh_burst} at once": together,
                **series,
            },
        ),
        bar_chart(
            "emulator_throughput",
            "print(1) throughput vs concurrent sessions",
            {f"{level} session{'s' * (level > 1)}": rates[level][0] for level in levels},
            "executions per second",
        ),
    ]
    return report


if __name__ == "__main__":
    args = cli(__doc__ or "")
    run_and_save("emulator", body, args.quick)
