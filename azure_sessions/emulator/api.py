"""The emulator's ASGI application: the API's routes and the emulator's own, errors in the service's shape, the
``api-supported-versions`` header on every reply and the fault-injection middleware around it all."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import admin, errors, routes, wire
from .dependencies import AppState
from .faults import FaultMiddleware

POOL_PATH = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", routes.POOL_PREFIX))
"""``routes.POOL_PREFIX`` as a pattern: what the fault rules' paths are relative to."""

__all__ = ["AppState", "create_app"]


def create_app(state: AppState) -> Any:
    """The ASGI application serving ``state``: FastAPI routes wrapped in the fault-injection middleware."""
    app = FastAPI(title="Azure Container Apps dynamic sessions emulator", openapi_url=None, docs_url=None,
                  redoc_url=None)  # fmt: skip
    app.state.emulator = state
    app.add_exception_handler(errors.EmulatorError, on_emulator_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.include_router(routes.router)
    app.include_router(admin.router)
    return VersionHeader(FaultMiddleware(app, state.faults, POOL_PATH, state.pool.expire, state.pool.full_error))


async def on_emulator_error(request: Request, exc: errors.EmulatorError) -> JSONResponse:
    return error_response(exc)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own 404 and 405 (no such route, or not with this method), in the service's error shape."""
    if exc.status_code == 404:
        return error_response(errors.not_found(f"No operation matches {request.method} {request.url.path}."))
    code = {405: "MethodNotAllowed"}.get(exc.status_code, f"Http{exc.status_code}")
    return error_response(errors.EmulatorError(exc.status_code, code, str(exc.detail)))


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(errors.bad_request(f"Invalid request: {exc.errors()}"))


def error_response(exc: errors.EmulatorError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers={"x-ms-error-code": exc.code, **exc.headers})


class VersionHeader:
    """Adds ``api-supported-versions`` to every response, like the service."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"api-supported-versions", wire.SUPPORTED_HEADER.encode())]  # fmt: skip
            await send(message)

        return await self.app(scope, receive, send_with_header)
