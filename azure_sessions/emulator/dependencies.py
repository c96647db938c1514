"""What every route checks before it acts, as FastAPI dependencies: the bearer token, the api-version, that the
version serves the route, the session identifier.

They run in this order whatever order a route names them in (each depends on the one before), so a request with
several faults gets the same error every time: 401 before a bad api-version, a bad api-version before a route the
version lacks, that before a bad identifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.params import Depends as DependsMarker

from ..dialects import VersionTraits
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


async def api_version(request: Request, _: Authorized) -> VersionTraits:
    """The traits of the request's supported ``api-version`` (400 when it is missing or unknown)."""
    return wire.check_version(request.query_params.get("api-version"))


ApiVersion = Annotated[VersionTraits, Depends(api_version)]


def serves(route: str) -> DependsMarker:
    """A route's dependency: 404 when the request's api-version does not serve ``route`` (``"POST executions"``)."""

    async def check(traits: ApiVersion) -> None:
        wire.check_route(traits, route)

    return Depends(check)


@dataclass(frozen=True)
class SessionCall:
    """A request on one session: the emulator, the api-version's traits and the validated ``identifier``."""

    state: AppState
    traits: VersionTraits
    identifier: str

    @property
    def pool(self) -> EmulatedPool:
        return self.state.pool

    @property
    def version(self) -> str:
        return self.traits.api_version


async def session_call(request: Request, state: Authorized, traits: ApiVersion) -> SessionCall:
    identifier = validate_identifier(request.query_params.get("identifier", ""), traits.identifier)
    return SessionCall(state, traits, identifier)


InSession = Annotated[SessionCall, Depends(session_call)]
