"""The emulator's own routes under ``.emulator/`` (none of them is the service's): statistics, fault rules, forced
expiry, interrupting a running execution, its live output, and the execution log. The bearer token protects them like
the API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..models import MAX_EXECUTION_SECONDS
from . import errors
from .dependencies import Authorized, InSession, authorized
from .faults import parse_rules
from .output import NOT_FOUND, OutputReader
from .routes import POOL_PREFIX

OUTPUT_APPEAR_SECONDS = 30.0
"""How long a live-output reader waits for its execution to arrive, at most (``wait=`` asks for less)."""
OUTPUT_MAX_SECONDS = MAX_EXECUTION_SECONDS + 60.0
"""How long one live-output stream lasts, at most (an execution's longest timeout, and a margin)."""
OUTPUT_KEEPALIVE_SECONDS = 1.0
"""A blank line after this long without output, so both sides notice a connection that went away."""
TIME_LIMIT = "time-limit"
_MAX_OPERATION_ID = 128

router = APIRouter(prefix=f"{POOL_PREFIX}/.emulator", dependencies=[Depends(authorized)])


@router.get("/info")
async def info(state: Authorized) -> Response:
    return JSONResponse(state.info | {"stats": state.pool.stats()}, 200)


@router.get("/faults")
async def faults(state: Authorized) -> Response:
    return JSONResponse(state.faults.snapshot(), 200)


@router.api_route("/faults", methods=["PUT", "POST"])
async def set_faults(request: Request, state: Authorized) -> Response:
    """PUT replaces the rules (and may reseed their random choices), POST adds to them."""
    try:
        body = json.loads(await request.body() or b"{}")
        specs = body.get("rules", []) if isinstance(body, dict) else body
        rules = parse_rules(specs if isinstance(specs, list) else str(specs))
    except (ValueError, TypeError) as exc:
        raise errors.bad_request(f"Invalid fault rules: {exc}", "InvalidFaultRules") from None
    if request.method == "PUT":
        state.faults.set_rules(rules, seed=body.get("seed") if isinstance(body, dict) else None)
    else:
        state.faults.add_rules(rules)
    return JSONResponse(state.faults.snapshot(), 200)


@router.delete("/faults")
async def clear_faults(state: Authorized) -> Response:
    state.faults.clear()
    return Response(status_code=204)


@router.post("/expire")
async def expire(request: Request, state: Authorized) -> Response:
    identifier = request.query_params.get("identifier")
    if not identifier and request.query_params.get("all", "").lower() != "true":
        raise errors.bad_request("Pass identifier=<id>, or all=true to expire every session.")
    expired = await state.blocking(state.pool.expire, identifier or None)
    return JSONResponse({"expired": expired}, 200)


@router.post("/interrupt")
async def interrupt(request: Request, call: InSession) -> Response:
    """Interrupt the session's running execution; answered like an unknown route where the pool is set to act like
    the service, which has no such operation."""
    if not call.pool.interruptible:
        raise errors.not_found(f"No operation matches {request.method} {request.url.path}.")
    interrupted = await call.state.blocking(call.pool.interrupt, call.identifier)
    return JSONResponse({"interrupted": interrupted}, 200)


@router.get("/output")
async def output(request: Request, call: InSession) -> Response:
    """The live output of the session's execution whose ``operation-id`` header was ``operation``, as JSON lines:
    ``{"stream": "stdout" | "stderr", "text": ...}`` from its start, as it is written, then ``{"end": how}``
    (``finished``; ``not-found``: no such execution in this session within ``wait`` seconds, at most 30;
    ``not-run``: it was refused before it ran; ``time-limit``). Blank lines keep a quiet stream alive. Answered like
    an unknown route where the pool is set to act like the service, which streams nothing."""
    if not call.pool.live_output:
        raise errors.not_found(f"No operation matches {request.method} {request.url.path}.")
    operation = request.query_params.get("operation", "")
    if not operation or len(operation) > _MAX_OPERATION_ID:
        raise errors.bad_request(
            "Pass operation=<the operation-id header of the execution> (at most 128 characters).", "InvalidOperation"
        )
    try:
        wait = min(float(request.query_params.get("wait", OUTPUT_APPEAR_SECONDS)), OUTPUT_APPEAR_SECONDS)
    except ValueError:
        raise errors.bad_request("wait must be a number of seconds.") from None
    loop, more = asyncio.get_running_loop(), asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            loop.call_soon_threadsafe(more.set)

    reader = call.pool.open_output(call.identifier, operation, wake)
    return StreamingResponse(
        _follow(reader, more, wait), 200, {"Cache-Control": "no-store"}, media_type="application/x-ndjson"
    )


async def _follow(reader: OutputReader, more: asyncio.Event, wait: float) -> AsyncIterator[bytes]:
    started = time.monotonic()
    try:
        while True:
            more.clear()
            chunks, ended = reader.read()
            lines = [json.dumps({"stream": stream, "text": text}) for stream, text in chunks]
            elapsed = time.monotonic() - started
            if ended is None and not reader.feed.claimed and elapsed >= wait:
                ended = NOT_FOUND
            elif ended is None and elapsed >= OUTPUT_MAX_SECONDS:
                ended = TIME_LIMIT
            if ended is not None:
                lines.append(json.dumps({"end": ended}))
            if lines:
                yield ("\n".join(lines) + "\n").encode()
            if ended is not None:
                return
            limit = wait - elapsed if not reader.feed.claimed else OUTPUT_KEEPALIVE_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(more.wait(), max(0.0, min(limit, OUTPUT_KEEPALIVE_SECONDS)))
            if not more.is_set():
                yield b"\n"
    finally:
        reader.close()


@router.get("/executions")
async def executions(request: Request, state: Authorized) -> Response:
    identifier = request.query_params.get("identifier")
    log = [e for e in list(state.pool.execution_log) if not identifier or e["identifier"] == identifier]
    return JSONResponse({"total": state.pool.execution_count(), "count": len(log), "executions": log}, 200)
