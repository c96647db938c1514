"""What every route checks before it acts, as FastAPI dependencies: the bearer token, the api-version, the session.

They run in this order whatever order a route names them in (each depends on the one before), so a request with
several faults gets the same error every time: 401 before a bad api-version, a bad api-version before a bad
identifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request

from . import files, wire
from .auth import check_bearer
from .faults import FaultInjector
from .sessions import EmulatedPool, validate_identifier

BLOCKING_CALLS = 256
"""Backend calls (executions, file operations) that may wait in threads at once."""


@dataclass
class AppState:
    """The emulator behind the routes."""

    pool: EmulatedPool
    token: str | None  # the one accepted bearer token; None: any non-empty one
    faults: FaultInjector
    staging_dir: Path  # where uploads are written before they are moved into a session
    info: dict[str, Any]  # what ``.emulator/info`` reports about this instance
    upload_limit: int = files.MAX_UPLOAD_BYTES
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(BLOCKING_CALLS))

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` in a worker thread, so the event loop keeps serving other requests."""
        return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs), limiter=self.limiter)


async def authorized(request: Request) -> AppState:
    """The emulator, once the request's bearer token is accepted (401 otherwise)."""
    state: AppState = request.app.state.emulator
    check_bearer(request.headers.get("authorization", ""), state.token)
    return state


Authorized = Annotated[AppState, Depends(authorized)]


async def api_version(request: Request, _: Authorized) -> str:
    """The request's supported ``api-version`` (400 when it is missing or unknown)."""
    return wire.check_version(request.query_params.get("api-version"))


ApiVersion = Annotated[str, Depends(api_version)]


@dataclass(frozen=True)
class SessionCall:
    """A request on one session: the emulator, the api-version and the validated ``identifier``."""

    state: AppState
    version: str
    identifier: str

    @property
    def pool(self) -> EmulatedPool:
        return self.state.pool

    async def directory(self) -> tuple[Path, int | None]:
        """The session's ``/mnt/data`` on the host and its worker's uid; the first call creates the session."""
        _, root, uid = await self.state.blocking(self.pool.session_dir, self.identifier)
        return root, uid


async def session_call(request: Request, state: Authorized, version: ApiVersion) -> SessionCall:
    return SessionCall(state, version, validate_identifier(request.query_params.get("identifier", "")))


InSession = Annotated[SessionCall, Depends(session_call)]
