"""Raw-HTTP helpers and dedicated emulator instances for the emulator's conformance tests, and the live check.

The live check works as moto's ``aws_verified``: a test that takes the ``service`` fixture runs against the emulator
and, when ``AZURE_SESSIONS_LIVE_ENDPOINT`` names a real pool management endpoint, unchanged against that pool too
(skipped otherwise). The bearer token is ``AZURE_SESSIONS_LIVE_TOKEN`` when set (``az account get-access-token
--resource https://dynamicsessions.io``), else ``DefaultAzureCredential``'s. Every session a live test used is
deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from azure_sessions.dialects import DEFAULT_API_VERSION, ENVELOPE_VERSIONS, SESSION_ROUTE_VERSION
from azure_sessions.emulator.tiers import BubblewrapTier
from tests.support.tiers import tier_problem

DEFAULT = DEFAULT_API_VERSION
LIVE_ENDPOINT_ENV = "AZURE_SESSIONS_LIVE_ENDPOINT"
LIVE_TOKEN_ENV = "AZURE_SESSIONS_LIVE_TOKEN"


class Api:
    """Thin raw-HTTP helper: builds URLs and headers, never interprets responses.

    ``live``: a real pool (tests skip what only the emulator can say); every identifier it was given is remembered,
    so that :meth:`delete_sessions` can free them."""

    def __init__(self, endpoint: str, token: str | Callable[[], str] | None, *, live: bool = False) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token or "any-token"
        self.live = live
        self.http = requests.Session()
        self.identifiers: set[str] = set()

    @property
    def token(self) -> str:
        return self._token() if callable(self._token) else self._token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def delete_sessions(self) -> None:
        """Free every session this helper named (best effort; the pool's cooldown ends the others)."""
        for identifier in sorted(self.identifiers):
            with contextlib.suppress(requests.RequestException):
                self.request("DELETE", "session", identifier, SESSION_ROUTE_VERSION)

    def request(
        self, method: str, path: str, identifier: str | None = None, version: str | None = DEFAULT, **kwargs: Any
    ) -> requests.Response:
        params = dict(kwargs.pop("params", {}) or {})
        if version is not None:
            params.setdefault("api-version", version)
        if identifier is not None:
            params.setdefault("identifier", identifier)
            self.identifiers.add(identifier)
        headers = {**self.headers, **(kwargs.pop("headers", {}) or {})}
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.endpoint}/{path}", params=params, headers=headers, **kwargs)

    def execute(
        self, identifier: str, code: str, version: str = DEFAULT, timeout: int | None = 60, **fields: Any
    ) -> requests.Response:
        body: dict[str, Any] = {"codeInputType": "inline", "executionType": "synchronous", "code": code, **fields}
        if timeout is not None:
            body["timeoutInSeconds"] = timeout
        if version in ENVELOPE_VERSIONS:
            return self.request("POST", "code/execute", identifier, version, json={"properties": body})
        return self.request("POST", "executions", identifier, version, json=body)

    def run(self, identifier: str, code: str, **kwargs: Any) -> dict[str, Any]:
        """Execute with the default (resource) dialect and return ``result`` plus ``status`` and the guid."""
        response = self.execute(identifier, code, **kwargs)
        assert response.status_code in (200, 202), response.text
        body = response.json()
        return {**body["result"], "status": body["status"], "guid": response.headers.get("x-ms-session-guid")}

    def upload(self, identifier: str, name: str, data: bytes, version: str = DEFAULT, **kwargs: Any):
        path = "files/upload" if version in ENVELOPE_VERSIONS else "files"
        files = {"file": (name, data, "application/octet-stream")}
        return self.request("POST", path, identifier, version, files=files, **kwargs)


def new_id() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture(scope="session")
def api(emulator, emulator_token) -> Api:
    return Api(emulator.endpoint, emulator_token)


def live_pool() -> tuple[str, str | Callable[[], str]] | None:
    """The real pool named by the environment (endpoint, token or token source), or None."""
    endpoint = os.environ.get(LIVE_ENDPOINT_ENV, "").strip()
    if not endpoint:
        return None
    token = os.environ.get(LIVE_TOKEN_ENV, "").strip()
    if token:
        return endpoint, token
    from azure_sessions.auth import TokenProvider

    return endpoint, TokenProvider(None).get_token


@pytest.fixture(scope="session", params=["emulator", "live"])
def service(request) -> Iterator[Api]:
    """The service under test: the shared emulator, then (when the environment names one) a real pool."""
    if request.param == "emulator":
        yield request.getfixturevalue("api")
        return
    pool = live_pool()
    if pool is None:
        pytest.skip(f"no live pool: set {LIVE_ENDPOINT_ENV} (and {LIVE_TOKEN_ENV} or an Azure login) to check it")
    live = Api(*pool, live=True)
    try:
        yield live
    finally:
        live.delete_sessions()


def emulator_only(service: Api, why: str) -> None:
    """Skip the rest of a live run: what follows is the emulator's own choice, not a fact about the service."""
    if service.live:
        pytest.skip(f"the emulator's own choice, not checked against the service: {why}")


@pytest.fixture
def ident() -> str:
    return new_id()


@pytest.fixture(scope="session")
def bwrap_ok() -> None:
    problem = BubblewrapTier.problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here: {problem}")


@pytest.fixture(scope="session")
def landlock_emulator() -> Iterator[Any]:
    """A second emulator in the Landlock tier (sandbox='landlock'), where the kernel allows it."""
    from azure_sessions.emulator import start_emulator

    problem = tier_problem("landlock")
    if problem:
        pytest.skip(f"the Landlock tier is not usable here: {problem}")
    with start_emulator(token="landlock-token", prestart=1, sandbox="landlock") as handle:
        yield handle


@pytest.fixture(scope="session")
def landlock_api(landlock_emulator) -> Api:
    return Api(landlock_emulator.endpoint, landlock_emulator.token)


@pytest.fixture(scope="session")
def bubblewrap_emulator(emulator) -> Iterator[Any]:
    """An emulator in the bubblewrap tier: the shared one when it is, else skipped."""
    problem = BubblewrapTier.problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here: {problem}")
    assert emulator.sandbox_mode == "bubblewrap"  # auto takes bubblewrap whenever it works
    yield emulator


@pytest.fixture(scope="module", params=["bubblewrap", "landlock"])
def tier(request) -> SimpleNamespace:
    """Each isolating tier in turn (its emulator and its API), skipped where the tier does not work."""
    emulator = request.getfixturevalue(f"{request.param}_emulator")
    api = request.getfixturevalue("api" if request.param == "bubblewrap" else "landlock_api")
    assert emulator.sandbox_mode == request.param
    return SimpleNamespace(name=request.param, emu=emulator, api=api)


@pytest.fixture(scope="session")
def unisolated() -> Iterator[Any]:
    """A second emulator in the unisolated fallback mode (sandbox='none')."""
    from azure_sessions.emulator import start_emulator

    with start_emulator(token="unisolated-token", prestart=0, sandbox="none") as handle:
        yield handle


@pytest.fixture(scope="session")
def unisolated_api(unisolated) -> Api:
    return Api(unisolated.endpoint, unisolated.token)
