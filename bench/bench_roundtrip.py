"""Round trip and connection reuse: `print(1)` in sequence through SessionsClient versus a fresh `requests.post` per
call (how the public clients do it), over plain HTTP and over HTTPS (the emulator behind self-signed certificates).

Both clients hit the same session of the same emulator (a separate process), alternating in blocks of 25 calls, so
a change in machine load hits both. The TCP connections are counted by the server: every connection it accepts,
attributed to the User-Agent of its first request (see bench/server.py).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import requests

from azure_sessions import SessionsClient
from bench.common import BenchReport, Row, Stats, cli, latency_chart, ms, run_and_save, times
from bench.server import EmulatorProcess

API_VERSION = "2024-10-02-preview"
CODE = "print(1)"
TARGET_RATIO = 2.0
OURS = "azure-sessions-python"
FRESH = "python-requests"
SCHEMES = ("http", "https", "https-rsa")
LABELS = {"http": "HTTP", "https": "HTTPS (ECDSA P-256 cert)", "https-rsa": "HTTPS (RSA-2048 cert)"}


def measure(emu: EmulatorProcess, scheme: str, calls: int, block: int) -> dict:
    endpoint = emu.endpoints[scheme]
    identifier = str(uuid.uuid4())
    with SessionsClient(endpoint, identifier, emu.token) as setup:  # allocate the session before timing
        setup.execute("pass")
    url = f"{endpoint}/executions?api-version={API_VERSION}&identifier={identifier}"
    body = {"codeInputType": "inline", "executionType": "synchronous", "code": CODE, "timeoutInSeconds": 60}
    headers = {"Authorization": f"Bearer {emu.token}"}
    verify = emu.cert if scheme.startswith("https") else True

    def fresh() -> None:
        response = requests.post(url, json=body, headers=headers, timeout=(10, 90), verify=verify)
        response.raise_for_status()
        assert response.json()["result"]["stdout"] == "1\n"

    emu.reset_connections(scheme)
    ours_ms: list[float] = []
    fresh_ms: list[float] = []
    client = SessionsClient(endpoint, identifier, emu.token)  # verify: REQUESTS_CA_BUNDLE, read at construction
    try:
        while len(ours_ms) < calls:
            for fn, sink in ((client.execute, ours_ms), (None, fresh_ms)):
                for _ in range(min(block, calls - len(sink))):
                    start = time.perf_counter()
                    if fn is None:
                        fresh()
                    else:
                        assert fn(CODE).stdout == "1\n"
                    sink.append((time.perf_counter() - start) * 1000.0)
        pools = client._http.adapters[endpoint.split("://")[0] + "://"].poolmanager.pools  # client-side cross-check
        client_side = sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 (not iterable)
    finally:
        client.close()
    counted = emu.connections(scheme)
    return {"ours": ours_ms, "fresh": fresh_ms, "server": counted["by_agent"], "client_side": client_side}


def body(quick: bool) -> BenchReport:
    calls, block = (30, 10) if quick else (300, 25)
    report = BenchReport("roundtrip", "1. Round trip and connection reuse")
    with (
        tempfile.TemporaryDirectory(prefix="bench-tls-") as tls_dir,
        EmulatorProcess(SCHEMES, prestart=1, tls_dir=tls_dir) as emu,
    ):
        emu.wait_pool()
        os.environ["REQUESTS_CA_BUNDLE"] = emu.cert or ""  # how a user trusts a private CA with requests
        results = {scheme: measure(emu, scheme, calls, block) for scheme in SCHEMES}
    series = {}
    for scheme, result in results.items():
        ours, fresh = Stats.of(result["ours"]), Stats.of(result["fresh"])
        ratio = fresh.median / ours.median
        label = LABELS[scheme]
        series[f"SessionsClient, {label}"] = result["ours"]
        series[f"requests.post per call, {label}"] = result["fresh"]
        tls = scheme.startswith("https")
        target = f"≥ {TARGET_RATIO:g}× faster" if tls else ""
        report.rows += [
            Row(
                f"print(1) ×{calls}, {label}: SessionsClient (one client)",
                "sequential, same session",
                ms(ours.median),
                ms(ours.p95),
                times(ratio) + " faster",
                target,
                ratio >= TARGET_RATIO if tls else None,
            ),
            Row(
                f"print(1) ×{calls}, {label}: fresh `requests.post` per call",
                "interleaved in blocks",
                ms(fresh.median),
                ms(fresh.p95),
                "1× (baseline)",
            ),
        ]
        ours_conns = result["server"].get(OURS, 0)
        fresh_conns = result["server"].get(FRESH, 0)
        report.rows += [
            Row(
                f"TCP connections, {label}: SessionsClient",
                f"accepted by the server for {calls} calls",
                str(ours_conns),
                "",
                "",
                "1 for the whole sequence",
                ours_conns == 1,
            ),
            Row(
                f"TCP connections, {label}: `requests.post` per call",
                f"accepted by the server for {calls} calls",
                str(fresh_conns),
                "",
                f"{fresh_conns / max(1, ours_conns):.0f}× more",
            ),
        ]
        report.notes.append(
            f"{label}: whole sequence {sum(result['ours']) / 1000:.2f} s (SessionsClient) vs "
            f"{sum(result['fresh']) / 1000:.2f} s (fresh posts); urllib3 on the client side reports "
            f"{result['client_side']} connection(s) opened by the SessionsClient."
        )
    report.notes += [
        "Server-side count: the emulator (its own process) serves through a uvicorn protocol subclass that counts "
        "each accepted TCP connection; the connection is attributed to the User-Agent of its first request.",
        "HTTPS: self-signed certificates generated at run time (cryptography), served by the emulator's own uvicorn "
        "(ssl_certfile/ssl_keyfile passed through uvicorn.Config in the emulator's process); both clients verify "
        "them (SessionsClient through REQUESTS_CA_BUNDLE, requests.post through verify=). Two key types: ECDSA "
        "P-256 has the cheapest handshake; RSA-2048 is what most public endpoints present.",
        "Loopback has no network round-trip time, so this is the least favourable setting for connection reuse: "
        "over a real network each fresh connection adds one RTT (TCP) plus one or two (TLS) per call, and the public "
        "clients also re-resolve DNS per call. The ratio here is a floor.",
    ]
    report.charts.append(latency_chart("roundtrip_latency", f"print(1) round trip, {calls} calls each", series))
    return report


if __name__ == "__main__":
    args = cli(__doc__ or "")
    run_and_save("roundtrip", body, args.quick)
