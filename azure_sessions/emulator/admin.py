"""The emulator's own routes under ``.emulator/`` (none of them is the service's): statistics, fault rules, forced
expiry, interrupting a running execution and the execution log. The bearer token protects them like the API."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from . import errors
from .dependencies import Authorized, InSession, authorized
from .faults import parse_rules
from .routes import POOL_PREFIX

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


@router.get("/executions")
async def executions(request: Request, state: Authorized) -> Response:
    identifier = request.query_params.get("identifier")
    log = [e for e in list(state.pool.execution_log) if not identifier or e["identifier"] == identifier]
    return JSONResponse({"total": state.pool.execution_count(), "count": len(log), "executions": log}, 200)
