"""The emulator in its own process, as a real service would be: plain HTTP and/or HTTPS, with connection counting.

Child side (`python -m bench.server --token T --schemes http,https --tls-dir D`): starts one emulator per scheme
with `start_emulator`, which builds its uvicorn server through `uvicorn.Config`; here that class is replaced, in this
process only, by one that adds the TLS certificate (for "https") and an HTTP protocol that counts the TCP
connections the server accepts. Nothing in `azure_sessions.emulator` is changed. Each accepted connection is
attributed to the User-Agent of its first request (an ASGI middleware notes the peer port of every request), so
two clients interleaved against one server are counted apart. The parent talks to the child over its stdin/stdout
(one JSON line per command), never over HTTP, so the benchmark's own queries open no connections.

Parent side: `EmulatorProcess` starts the child, reads its endpoints and serves those commands.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import ROOT

TOKEN = "bench-token-not-a-secret"
_PREFIX = "BENCH "


# ---------------------------------------------------------------------------------------------------- TLS material
def make_self_signed(directory: str | os.PathLike[str], kind: str = "ec") -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1/localhost (its own CA) and its key, written into `directory`.

    `kind`: "ec" (ECDSA P-256, the cheapest handshake) or "rsa" (RSA-2048, what most public endpoints serve).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sessions-bench-localhost")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=kind == "rsa",
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = Path(directory) / f"cert-{kind}.pem"
    key_path = Path(directory) / f"key-{kind}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


# ---------------------------------------------------------------------------------------------------- child side
class ConnectionLog:
    """Connections a server accepted (by peer port) and the User-Agent of the first request on each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted: list[int] = []
        self.agent_of: dict[int, str] = {}
        self.requests: Counter[str] = Counter()

    def connected(self, port: int) -> None:
        with self._lock:
            self.accepted.append(port)

    def request(self, port: int, agent: str) -> None:
        with self._lock:
            self.agent_of.setdefault(port, agent)
            self.requests[agent] += 1

    def reset(self) -> None:
        with self._lock:
            self.accepted.clear()
            self.agent_of.clear()
            self.requests.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            by_agent = Counter(self.agent_of.get(port, "no request") for port in self.accepted)
            return {"connections": len(self.accepted), "by_agent": dict(by_agent), "requests": dict(self.requests)}


def _agent_family(user_agent: str) -> str:
    return user_agent.split("/", 1)[0] or "unknown"


def _install_config_hook(logs: list[ConnectionLog], tls: list[tuple[str, str] | None]) -> None:
    """Make the next `uvicorn.Config(...)` calls count connections (and serve TLS when `tls` says so)."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base_config = uvicorn.Config

    class CountingConfig(base_config):  # type: ignore[misc, valid-type]
        def __init__(self, app: Any, **kwargs: Any) -> None:
            log = ConnectionLog()
            logs.append(log)
            pair = tls.pop(0) if tls else None
            if pair is not None:
                kwargs["ssl_certfile"], kwargs["ssl_keyfile"] = pair

            class CountingProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
                def connection_made(self, transport: Any) -> None:
                    peer = transport.get_extra_info("peername") or ("", 0)
                    log.connected(int(peer[1]))
                    super().connection_made(transport)

            async def counting_app(scope: dict, receive: Any, send: Any) -> None:
                if scope.get("type") == "http" and scope.get("client"):
                    headers = dict(scope.get("headers") or [])
                    agent = _agent_family(headers.get(b"user-agent", b"").decode("latin-1"))
                    log.request(int(scope["client"][1]), agent)
                await app(scope, receive, send)

            kwargs["http"] = CountingProtocol
            super().__init__(counting_app, **kwargs)

    uvicorn.Config = CountingConfig  # this process only


def _serve(args: argparse.Namespace) -> int:
    from azure_sessions.emulator import start_emulator

    schemes = [s for s in args.schemes.split(",") if s]
    logs: list[ConnectionLog] = []
    handles: dict[str, Any] = {}
    counters: dict[str, ConnectionLog] = {}
    pairs = {
        scheme: make_self_signed(args.tls_dir, "rsa" if scheme.endswith("-rsa") else "ec")
        for scheme in schemes
        if scheme.startswith("https")
    }
    bundle = None
    if pairs:  # one CA bundle trusting every certificate served here (REQUESTS_CA_BUNDLE takes one file)
        bundle = str(Path(args.tls_dir) / "bundle.pem")
        Path(bundle).write_text("".join(Path(cert).read_text() for cert, _ in pairs.values()))
    for scheme in schemes:
        _install_config_hook(logs, [pairs.get(scheme)])
        handle = start_emulator(
            token=args.token,
            prestart=args.prestart,
            cooldown=args.cooldown,
            max_sessions=args.max_sessions,
            sandbox=args.sandbox,
        )
        handles[scheme] = handle
        counters[scheme] = logs[-1]
    endpoints = {
        scheme: handle.endpoint.replace("http://", "https://", 1) if scheme in pairs else handle.endpoint
        for scheme, handle in handles.items()
    }
    first = next(iter(handles.values()))
    _reply({"pid": os.getpid(), "endpoints": endpoints, "cert": bundle, "sandbox": first.sandbox_mode})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command.get("op")
            scheme = command.get("scheme") or schemes[0]
            if op == "quit":
                break
            if op == "stats":
                _reply(counters[scheme].snapshot())
            elif op == "reset":
                counters[scheme].reset()
                _reply({"ok": True})
            elif op == "wait_pool":
                start = time.perf_counter()
                ok = all(h.wait_for_pool(float(command.get("timeout", 120))) for h in handles.values())
                _reply({"ok": ok, "waited": time.perf_counter() - start})
            elif op == "wait_template":
                start = time.perf_counter()
                ok = all(h.wait_for_template(float(command.get("timeout", 120))) for h in handles.values())
                _reply({"ok": ok, "waited": time.perf_counter() - start})
            elif op == "memory":
                _reply({s: _session_memory(h) for s, h in handles.items()})
            elif op == "info":
                _reply({s: dataclasses.asdict(h.counters()) for s, h in handles.items()})
            else:
                _reply({"error": f"unknown op {op!r}"})
    finally:
        for handle in handles.values():
            handle.stop()
    return 0


def _session_memory(handle: Any) -> dict[str, Any]:
    """Unique (USS) and proportional (PSS) memory of every live session's worker and of the template, in KiB."""
    workers = [view.worker_pid for view in handle.sessions() if view.alive]
    template = handle.template_pid
    return {"workers": [smaps_kb(pid) for pid in workers], "template": smaps_kb(template) if template else None}


def smaps_kb(pid: int | str = "self") -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of a process, in KiB, from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0])
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------- parent side
class EmulatorProcess:
    """`python -m bench.server` as a child process: endpoints, connection counts, pool waits, memory."""

    def __init__(
        self,
        schemes: tuple[str, ...] = ("http",),
        *,
        prestart: int = 2,
        tls_dir: str | None = None,
        cooldown: float = 600.0,
        max_sessions: int = 100,
        token: str = TOKEN,
        sandbox: str = "auto",
    ) -> None:
        if any(scheme.startswith("https") for scheme in schemes) and not tls_dir:
            raise ValueError("https needs tls_dir")
        self.token = token
        command = [
            sys.executable,
            "-m",
            "bench.server",
            "--token",
            token,
            "--schemes",
            ",".join(schemes),
            "--prestart",
            str(prestart),
            "--cooldown",
            str(cooldown),
            "--max-sessions",
            str(max_sessions),
            "--sandbox",
            sandbox,
        ]
        if tls_dir:
            command += ["--tls-dir", tls_dir]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        hello = self._read()
        self.pid: int = hello["pid"]
        self.endpoints: dict[str, str] = hello["endpoints"]
        self.cert: str | None = hello["cert"]
        self.sandbox: str = hello["sandbox"]

    @property
    def endpoint(self) -> str:
        return next(iter(self.endpoints.values()))

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_PREFIX):
                return json.loads(line[len(_PREFIX) :])
            sys.stderr.write(line)  # anything else the emulator printed
        raise RuntimeError(f"the emulator process ended (exit code {self.proc.wait()})")

    def command(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            return self._read()

    def wait_pool(self, timeout: float = 180.0) -> float:
        """Block until every pre-started worker is ready; returns the seconds waited."""
        reply = self.command("wait_pool", timeout=timeout)
        if not reply["ok"]:
            raise RuntimeError(f"the emulator's worker pool did not fill within {timeout:.0f} s")
        return float(reply["waited"])

    def wait_template(self, timeout: float = 180.0) -> float:
        """Block until the sandbox template is prepared; returns the seconds waited."""
        reply = self.command("wait_template", timeout=timeout)
        if not reply["ok"]:
            raise RuntimeError(f"the emulator's sandbox template was not ready within {timeout:.0f} s")
        return float(reply["waited"])

    def session_memory(self) -> dict[str, Any]:
        """USS/PSS/RSS (KiB) of each live session's worker and of the template, for the first scheme."""
        return next(iter(self.command("memory").values()))

    def connections(self, scheme: str | None = None) -> dict[str, Any]:
        return self.command("stats", scheme=scheme)

    def reset_connections(self, scheme: str | None = None) -> None:
        self.command("reset", scheme=scheme)

    def memory_kb(self) -> dict[str, int]:
        return proc_memory_kb(self.pid)

    def reset_peak(self) -> None:
        reset_peak_rss(self.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.command("quit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def proc_memory_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values


def reset_peak_rss(pid: int | str = "self") -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: writing 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def main() -> int:
    parser = argparse.ArgumentParser(description="the emulator for the benchmarks, driven over stdin")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--schemes", default="http")
    parser.add_argument("--tls-dir", default=None)
    parser.add_argument("--prestart", type=int, default=2)
    parser.add_argument("--cooldown", type=float, default=600.0)
    parser.add_argument("--max-sessions", type=int, default=100)
    parser.add_argument("--sandbox", default="auto")
    return _serve(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
