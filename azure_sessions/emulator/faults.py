"""Opt-in fault injection for reliability tests: throttling, server errors, delays, dropped connections, expiry.

A rule is written ``KIND[:key=value]...``; several rules are separated by ``;`` (env var) or given as repeated
``--fault`` flags. KIND is an HTTP status (``429``, ``500``, ``503``, ...), ``delay``, ``drop``, ``expire`` or
``full`` (answered as a full pool answers: the emulator's pool-full status, or ``status=404``/``status=429``).
Keys: ``rate`` (probability per matching request, default 1), ``count`` (fire at most N times), ``path`` (regex
searched in the path after the pool endpoint, e.g. ``executions|code/execute``), ``method`` (e.g. ``POST``),
``phase`` (``before`` = the request is never processed, the default; ``after`` = processed, then the response is
replaced, delayed or dropped), ``retry_after`` (seconds, for status faults), ``seconds`` (for delay).
Examples: ``429:rate=0.1:retry_after=1``, ``drop:path=executions:phase=after:count=1``, ``delay:seconds=2``,
``full:status=429:path=executions``.
Environment: ``AZURE_SESSIONS_EMULATOR_FAULTS`` (rules) and ``AZURE_SESSIONS_EMULATOR_FAULT_SEED``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from . import errors

ENV_RULES = "AZURE_SESSIONS_EMULATOR_FAULTS"
ENV_SEED = "AZURE_SESSIONS_EMULATOR_FAULT_SEED"
KINDS = ("status", "delay", "drop", "expire", "full")


@dataclass
class FaultRule:
    kind: str
    status: int | None = None
    rate: float = 1.0
    count: int | None = None
    path: str | None = None
    method: str | None = None
    phase: str = "before"
    retry_after: float | None = None
    seconds: float = 1.0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use an HTTP status, delay, drop, expire or full")
        if self.kind == "status" and not (self.status and 400 <= self.status <= 599):
            raise ValueError("a status fault needs an HTTP status between 400 and 599")
        if self.kind == "full" and self.status not in (None, *errors.POOL_FULL_STATUSES):
            raise ValueError(f"a full-pool fault answers with one of {errors.POOL_FULL_STATUSES}")
        if self.phase not in ("before", "after"):
            raise ValueError("phase must be 'before' or 'after'")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if self.path:
            re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_rule(spec: str | dict | FaultRule) -> FaultRule:
    if isinstance(spec, FaultRule):
        return spec
    if isinstance(spec, dict):
        data = {k: v for k, v in spec.items() if k != "fired"}
        if "kind" not in data and "status" in data:
            data["kind"] = "status"
        if isinstance(data.get("kind"), int) or str(data.get("kind", "")).isdigit():
            data["status"], data["kind"] = int(data["kind"]), "status"
        return FaultRule(**data)
    head, *options = [part.strip() for part in str(spec).strip().split(":")]
    data: dict[str, Any] = {"status": int(head), "kind": "status"} if head.isdigit() else {"kind": head.lower()}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"fault option {option!r} must look like key=value")
        key = key.strip().lower().replace("-", "_")
        if key in ("rate", "retry_after", "seconds"):
            data[key] = float(value)
        elif key in ("count", "status"):
            data[key] = int(value)
        elif key in ("path", "method", "phase"):
            data[key] = value
        else:
            raise ValueError(f"unknown fault option {key!r}")
    return FaultRule(**data)


def parse_rules(specs: str | list | tuple | None) -> list[FaultRule]:
    if specs is None:
        return []
    if isinstance(specs, str):
        text = specs.strip()
        if text.startswith("["):
            return [parse_rule(item) for item in json.loads(text)]
        return [parse_rule(part) for part in text.split(";") if part.strip()]
    return [parse_rule(item) for item in specs]


class FaultInjector:
    """Thread-safe rule set; ``pick`` decides which faults hit one request."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules = list(rules or [])
        self._random = random.Random(seed)
        self.fired: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def set_rules(self, rules: list[FaultRule], seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._random.seed(seed)

    def add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def clear(self) -> None:
        self.set_rules([])

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [rule.to_dict() for rule in self._rules], "fired": dict(self.fired)}

    def pick(self, method: str, path: str) -> list[FaultRule]:
        chosen = []
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path) and self._random.random() < rule.rate:
                    rule.fired += 1
                    label = str(rule.status) if rule.kind == "status" else rule.kind
                    self.fired[label] += 1
                    chosen.append(rule)
        return chosen


class FaultMiddleware:
    """Pure ASGI middleware (outermost, so ``receive`` is still the server's own and can reach the socket)."""

    def __init__(self, app, injector: FaultInjector, prefix: re.Pattern[str], expire, pool_full) -> None:
        self.app = app
        self.injector = injector
        self.prefix = prefix
        self.expire = expire  # callable(identifier) run in a thread
        self.pool_full = pool_full  # callable(status or None) -> the EmulatorError of a full pool

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.injector.active:
            return await self.app(scope, receive, send)
        match = self.prefix.match(scope.get("path", ""))
        rel = scope["path"][match.end() :].lstrip("/") if match else scope.get("path", "")
        if rel.startswith(".emulator"):
            return await self.app(scope, receive, send)
        rules = self.injector.pick(scope["method"], rel)
        if not rules:
            return await self.app(scope, receive, send)
        before = [r for r in rules if r.phase == "before"]
        after = [r for r in rules if r.phase == "after"]
        for rule in before:
            if rule.kind == "delay":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "expire":
                identifier = _query_value(scope, "identifier")
                if identifier:
                    await asyncio.to_thread(self.expire, identifier)
            elif rule.kind == "drop":
                return _drop(receive)
            else:
                return await _send_error(send, self._error(rule))
        if not after:
            return await self.app(scope, receive, send)
        return await self._after(scope, receive, send, after)

    async def _after(self, scope, receive, send, rules: list[FaultRule]) -> None:
        replace = next((r for r in rules if r.kind in ("status", "drop", "full")), None)
        delay = sum(r.seconds for r in rules if r.kind == "delay")
        expire = any(r.kind == "expire" for r in rules)
        started = False

        async def guarded_send(message) -> None:
            nonlocal started
            if replace is not None:
                return  # swallow the real response
            if message["type"] == "http.response.start" and not started:
                started = True
                if delay:
                    await asyncio.sleep(delay)
            await send(message)

        await self.app(scope, receive, guarded_send)
        if expire:
            identifier = _query_value(scope, "identifier")
            if identifier:
                await asyncio.to_thread(self.expire, identifier)
        if replace is None:
            return None
        if replace.kind == "drop":
            return _drop(receive)
        return await _send_error(send, self._error(replace))

    def _error(self, rule: FaultRule) -> errors.EmulatorError:
        if rule.kind == "full":
            return self.pool_full(rule.status)
        return errors.injected(rule.status or 500, rule.retry_after)


def _query_value(scope, key: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(key)
    return values[0] if values else None


def _drop(receive) -> None:
    """Abort the TCP connection without a response (uvicorn's cycle object owns the transport)."""
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("injected fault: dropped connection")
    transport.abort()
    if hasattr(cycle, "disconnected"):
        cycle.disconnected = True  # so the server does not try to answer on the aborted connection


async def _send_error(send, error: errors.EmulatorError) -> None:
    body = json.dumps(error.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"x-ms-error-code", error.code.encode())]  # fmt: skip
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
