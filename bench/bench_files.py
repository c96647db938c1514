"""Files: upload and download of 1 MiB, 32 MiB and 128 MiB (exactly the service's limit) through SessionsClient
(streamed both ways) versus the whole-file-in-memory way of the public clients (`requests.post(files={"file":
data})` and `requests.get(...).content`). Throughput, and the peak resident memory growth of the client process
and of the emulator process.

Every transfer runs in a fresh client subprocess (`--child`), which measures its own peak RSS growth over the
transfer (VmHWM reset through /proc/self/clear_refs after imports, client set-up and one small warm-up request).
The emulator runs in its own process; its peak is reset the same way before each transfer and read after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchReport, Row, Stats, bar_chart, cli, run_and_save
from bench.server import EmulatorProcess, proc_memory_kb, reset_peak_rss

MIB = 1024 * 1024
SIZES = {"1 MiB": MIB, "32 MiB": 32 * MIB, "128 MiB": 128 * MIB}  # 128 MiB = MAX_UPLOAD_BYTES exactly
API_VERSION = "2024-10-02-preview"
TARGET_MBPS = 200.0
TARGET_GROWTH_MB = 32.0
METHODS = {
    ("upload", "ours"): "SessionsClient.upload (streamed)",
    ("upload", "whole"): "requests.post(files={'file': data})",
    ("download", "ours"): "SessionsClient.download to a file (streamed)",
    ("download", "whole"): "requests.get(...).content, then written",
}


# ---------------------------------------------------------------------------------------------------- child side
def child(spec: dict) -> dict:
    """`spec["count"]` transfers in this (fresh) process; returns their durations and this process's peak RSS growth
    over all of them."""
    import requests

    from azure_sessions import SessionsClient

    client = SessionsClient(spec["endpoint"], spec["identifier"], spec["token"])
    client.list_files()  # connection up, imports done
    headers = {"Authorization": f"Bearer {spec['token']}"}
    base = f"{spec['endpoint']}/files"
    query = {"api-version": API_VERSION, "identifier": spec["identifier"]}
    requests.get(base, params=query, headers=headers, timeout=60).raise_for_status()
    reset_peak_rss()
    before = proc_memory_kb()["VmRSS"]
    seconds = []
    for _ in range(spec["count"]):
        start = time.perf_counter()
        one_transfer(spec, client, base, query, headers)
        seconds.append(time.perf_counter() - start)
    peak = proc_memory_kb()["VmHWM"]
    client.close()
    return {"seconds": seconds, "growth_kb": peak - before}


def one_transfer(spec: dict, client: Any, base: str, query: dict, headers: dict) -> None:
    import requests

    if spec["direction"] == "upload" and spec["method"] == "ours":
        client.upload(spec["path"], spec["name"])
    elif spec["direction"] == "upload":
        with open(spec["path"], "rb") as fh:
            data = fh.read()
        response = requests.post(
            base, params=query, headers=headers, files={"file": (spec["name"], data)}, timeout=300
        )
        response.raise_for_status()
        del data
    elif spec["method"] == "ours":
        client.download(spec["name"], spec["path"])
    else:
        response = requests.get(f"{base}/{spec['name']}/content", params=query, headers=headers, timeout=300)
        response.raise_for_status()
        Path(spec["path"]).write_bytes(response.content)


# ---------------------------------------------------------------------------------------------------- parent side
def transfer(emu: EmulatorProcess, spec: dict) -> dict:
    emu.reset_peak()
    emulator_before = emu.memory_kb()["VmRSS"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_files", "--child", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"transfer {spec['direction']}/{spec['method']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["emulator_growth_kb"] = emu.memory_kb()["VmHWM"] - emulator_before
    return result


def body(quick: bool) -> BenchReport:
    # (processes, transfers per process) per size: small files need many transfers to see through the noise
    plan = {"1 MiB": (1, 5), "32 MiB": (1, 1)} if quick else {"1 MiB": (3, 10), "32 MiB": (3, 3), "128 MiB": (3, 1)}
    report = BenchReport("files", "4. Files")
    results: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp, EmulatorProcess(("http",), prestart=1) as emu:
        emu.wait_pool()
        common = {"endpoint": emu.endpoint, "identifier": str(uuid.uuid4()), "token": emu.token}
        for label, (processes, count) in plan.items():
            size = SIZES[label]
            source = Path(tmp) / f"data-{size}.bin"
            with open(source, "wb") as fh:
                for _ in range(size // MIB):
                    fh.write(os.urandom(MIB))  # incompressible
            name = f"bench-{size}.bin"
            for _ in range(processes):
                for method in ("ours", "whole"):  # alternate the two ways: same file, same session
                    spec = {**common, "direction": "upload", "method": method, "path": str(source), "name": name}
                    results.setdefault(("upload", method, label), []).append(transfer(emu, spec | {"count": count}))
                    dest = str(Path(tmp) / f"down-{method}.bin")
                    spec = {**common, "direction": "download", "method": method, "path": dest, "name": name}
                    results.setdefault(("download", method, label), []).append(transfer(emu, spec | {"count": count}))
                    if os.path.getsize(dest) != size:
                        raise RuntimeError(f"download {method} of {label} is {os.path.getsize(dest)} bytes")
                    os.unlink(dest)
            source.unlink()

    def rates(runs: list[dict], size: int) -> list[float]:
        return [size / seconds / 1e6 for run in runs for seconds in run["seconds"]]

    speeds: dict[str, float] = {}
    growth: dict[str, float] = {}
    for direction in ("upload", "download"):
        for label in plan:
            size = SIZES[label]
            for method in ("ours", "whole"):
                runs = results[(direction, method, label)]
                rate = Stats.of(rates(runs, size))
                client_mb = max(r["growth_kb"] for r in runs) / 1024
                emulator_mb = max(r["emulator_growth_kb"] for r in runs) / 1024
                ours = method == "ours"
                key = f"{direction}\n{label}\n{'streamed' if ours else 'in memory'}"
                speeds[key] = rate.median
                growth[key] = client_mb
                checks, target, ratio = [], "", ""
                if ours:
                    other = results[(direction, "whole", label)]
                    other_rate = Stats.of(rates(other, size)).median
                    other_mb = max(r["growth_kb"] for r in other) / 1024
                    ratio = f"{rate.median / other_rate:.2f}× the speed; client memory {client_mb:.1f} vs {other_mb:.1f} MB"
                    if label == "128 MiB":
                        checks.append(rate.median >= TARGET_MBPS)
                        target = f"≥ {TARGET_MBPS:g} MB/s; "
                    checks.append(client_mb <= TARGET_GROWTH_MB and emulator_mb <= TARGET_GROWTH_MB)
                    target += f"≤ {TARGET_GROWTH_MB:g} MB growth each"
                transfers = sum(len(r["seconds"]) for r in runs)
                report.rows.append(
                    Row(
                        f"{direction} {label}: {METHODS[(direction, method)]}",
                        f"{transfers} transfers in {len(runs)} processes; peak RSS growth: client {client_mb:.1f} MB, "
                        f"emulator {emulator_mb:.1f} MB",
                        f"{rate.median:.0f} MB/s",
                        f"{Stats.of([-r for r in rates(runs, size)]).p95 * -1:.0f} MB/s (slow end)",
                        ratio,
                        target,
                        all(checks) if checks else None,
                    )
                )
    report.notes += [
        "MB/s = 10^6 bytes per second, wall time of the transfer call alone in the client process; the p95 column "
        "is the 5th percentile of throughput (the slow end). Memory growth = peak RSS during the transfers minus "
        "RSS just before them (MiB), the worst process; the emulator's peak is reset before each client process.",
        "Files are random bytes (incompressible); the download writes to a local file both ways. 128 MiB is exactly "
        "the service's upload limit.",
    ]
    report.charts += [
        bar_chart(
            "files_throughput",
            "transfer throughput (MB/s, median; grey: whole file in memory)",
            speeds,
            "MB/s",
            target=TARGET_MBPS,
            baseline=lambda label: "in memory" in label,
        ),
        bar_chart(
            "files_memory",
            "client peak RSS growth (MiB, worst process; grey: whole file in memory)",
            growth,
            "MiB",
            target=TARGET_GROWTH_MB,
            baseline=lambda label: "in memory" in label,
        ),
    ]
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        sys.exit(0)
    args = cli(__doc__ or "")
    run_and_save("files", body, args.quick)
