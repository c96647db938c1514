"""Emulator latency and throughput, through SessionsClient, the emulator in its own process (bubblewrap sandbox when
the machine allows it):

- first call on a new identifier, after the pre-started worker pool has refilled (a real user pauses between new
  sessions; the pause itself is reported), and during a burst of new sessions that drains the pool;
- warm `print(1)` on one session;
- a pandas + matplotlib cell that draws a plot (the image comes back as the result);
- throughput (executions/s) of `print(1)` with 1, 4 and 16 sessions running at once, one client thread each;
- Stop: from `interrupt()` to the interrupted execution's reply, for a loop that would run for a minute.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from azure_sessions import SessionsClient
from bench.common import BenchReport, Row, Stats, bar_chart, cli, latency_chart, ms, run_and_save, time_calls, times
from bench.server import EmulatorProcess

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

        emu.wait_pool()
        burst_clients = [SessionsClient(emu.endpoint, str(uuid.uuid4()), emu.token) for _ in range(max(levels))]

        def first_call(c: SessionsClient) -> float:
            start = time.perf_counter()
            c.execute("print(1)", timeout=120)
            return (time.perf_counter() - start) * 1000.0

        cold_before = emu.command("info")["http"]["cold_starts"]
        with ThreadPoolExecutor(len(burst_clients)) as pool:
            burst = list(pool.map(first_call, burst_clients))
        cold = emu.command("info")["http"]["cold_starts"] - cold_before
        rates: dict[int, tuple[float, list[float]]] = {}
        for level in levels:
            rates[level] = throughput(burst_clients[:level], seconds)
        for c in burst_clients:
            c.delete_session()
            c.close()
        info = emu.command("info")

    f, w, p, b, st = Stats.of(first), Stats.of(warm), Stats.of(plot), Stats.of(burst), Stats.of(stop)
    report.rows += [
        Row(
            "first call on a new identifier",
            f"pool refilled before each ({n_first} samples)",
            ms(f.median),
            ms(f.p95),
            "",
            "p50 ≤ 100 ms",
            f.median <= 100,
        ),
        Row(
            f"first call, burst of {len(burst)} new sessions at once",
            "pool of 2 drained; the rest cold-start",
            ms(b.median),
            ms(b.p95),
            f"{cold} of {len(burst)} cold-started",
        ),
        Row(
            "warm `print(1)`", f"one session, {n_warm} calls", ms(w.median), ms(w.p95), "", "p50 ≤ 5 ms", w.median <= 5
        ),
        Row(
            "pandas + matplotlib cell that plots",
            f"warm session, {n_plot} runs, PNG returned",
            ms(p.median),
            ms(p.p95),
            times(p.median / w.median) + " warm print(1)",
        ),
        Row(
            "Stop: interrupt a running loop",
            f"`interrupt()` to the execution's reply, {n_stop} samples",
            ms(st.median),
            ms(st.p95),
            "the session keeps its state",
            "p95 ≤ 1 s",
            st.p95 <= 1000,
        ),
    ]
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
        f"Pre-started workers: the emulator keeps 2 ready; filling the pool at start took {fill:.1f} s and each "
        f"refill between first-call samples took a median {statistics.median(waits):.1f} s (then a {pause:g} s "
        "pause), which is the pause a real user gives it. A burst beyond the pool cold-starts workers; that is the "
        "second row.",
        f"Emulator counters at the end: {info['http']['sessionsCreated']} sessions created, "
        f"{info['http']['cold_starts']} cold starts, {info['http']['executionsTotal']} executions.",
        f"Sandbox: {emu.sandbox}. Client and emulator share the machine's cores; the throughput clients are threads "
        "of one Python process (the GIL), so the figures are a floor for the emulator.",
    ]
    report.charts += [
        latency_chart(
            "emulator_latency",
            "emulator latencies",
            {
                "first call, new identifier": first,
                f"first call, burst of {len(burst)}": burst,
                "warm print(1)": warm,
                "pandas/matplotlib plot": plot,
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
