"""Client overhead: `SessionsClient.execute("print(1)")` versus a bare keep-alive `requests.Session.post` of the same
JSON body to the same session of the same emulator (a separate process), interleaved call by call (A B C, the order
rotating each round), so both see the same machine load. Also the client's own CPU time per call (thread CPU time,
which other processes' load barely disturbs).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import requests

from azure_sessions import SessionsClient
from bench.common import BenchReport, Row, Stats, cli, interleaved, latency_chart, ms, pct, run_and_save
from bench.server import EmulatorProcess

API_VERSION = "2024-10-02-preview"
CODE = "print(1)"
TARGET = 0.10


def cpu_timed(fn: Callable[[], object], sink: list[float]) -> Callable[[], None]:
    def call() -> None:
        start = time.thread_time()
        fn()
        sink.append((time.thread_time() - start) * 1000.0)

    return call


def body(quick: bool) -> BenchReport:
    repeat = 60 if quick else 800
    report = BenchReport("overhead", "2. Client overhead")
    with EmulatorProcess(("http",), prestart=1) as emu:
        emu.wait_pool()
        identifier = str(uuid.uuid4())
        client = SessionsClient(emu.endpoint, identifier, emu.token)
        url = f"{emu.endpoint}/executions?api-version={API_VERSION}&identifier={identifier}"
        payload = {"codeInputType": "inline", "executionType": "synchronous", "code": CODE, "timeoutInSeconds": 60}
        bare = requests.Session()  # defaults: trust_env=True (re-reads proxy/netrc settings per request)
        bare.headers["Authorization"] = f"Bearer {emu.token}"
        lean = requests.Session()  # the leanest requests can be: no environment look-ups per request
        lean.trust_env = False
        lean.headers["Authorization"] = f"Bearer {emu.token}"

        def post(session: requests.Session) -> Callable[[], object]:
            def call() -> object:
                response = session.post(url, json=payload, timeout=(10, 90))
                response.raise_for_status()
                return response.json()

            return call

        cpu: dict[str, list[float]] = {"ours": [], "bare": [], "lean": []}
        samples = interleaved(
            {
                "ours": cpu_timed(lambda: client.execute(CODE), cpu["ours"]),
                "bare": cpu_timed(post(bare), cpu["bare"]),
                "lean": cpu_timed(post(lean), cpu["lean"]),
            },
            repeat=repeat,
            warmup=5,
        )
        client.close()
        bare.close()
        lean.close()
    stats = {name: Stats.of(values) for name, values in samples.items()}
    cpu_stats = {name: Stats.of(values[5:]) for name, values in cpu.items()}  # drop the warm-up calls
    for baseline, label in (
        ("bare", "`requests.Session()` (defaults)"),
        ("lean", "`requests.Session()`, trust_env=False"),
    ):
        overhead = stats["ours"].median / stats[baseline].median - 1
        paired = statistics.median(a - b for a, b in zip(samples["ours"], samples[baseline], strict=True))
        report.rows.append(
            Row(
                f"SessionsClient.execute vs bare {label}",
                f"{repeat} interleaved calls each",
                f"{ms(stats['ours'].median)} vs {ms(stats[baseline].median)}",
                f"{ms(stats['ours'].p95)} vs {ms(stats[baseline].p95)}",
                f"{pct(overhead)} (paired median {paired:+.3f} ms)",
                "≤ 10 % at the median",
                overhead <= TARGET,
            ),
        )
    report.rows.append(
        Row(
            "client CPU per call (thread time)",
            "same calls",
            "  ·  ".join(f"{name} {cpu_stats[name].median:.2f} ms" for name in ("ours", "bare", "lean")),
            "  ·  ".join(f"{name} {cpu_stats[name].p95:.2f} ms" for name in ("ours", "bare", "lean")),
            pct(cpu_stats["ours"].median / cpu_stats["bare"].median - 1) + " vs defaults",
        ),
    )
    report.notes += [
        "Same body, same session, same emulator process; every baseline call also checks the status and parses the "
        "JSON reply, as any caller must. SessionsClient additionally builds the typed ExecutionResult.",
        "The paired median is the median of per-round differences (ours minus baseline, same round), which cancels "
        "load shifts between rounds.",
    ]
    report.charts.append(
        latency_chart(
            "overhead_latency",
            f"print(1) on a keep-alive connection, {repeat} calls each",
            {
                "SessionsClient.execute": samples["ours"],
                "requests.Session (defaults)": samples["bare"],
                "requests.Session (trust_env=False)": samples["lean"],
            },
        )
    )
    return report


if __name__ == "__main__":
    args = cli(__doc__ or "")
    run_and_save("overhead", body, args.quick)
