"""Raw-HTTP helpers and dedicated emulator instances for the emulator's conformance tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from azure_sessions.dialects import ENVELOPE_VERSIONS
from azure_sessions.emulator.sandbox import bubblewrap_problem
from tests.support.tiers import tier_problem

DEFAULT = "2024-10-02-preview"


class Api:
    """Thin raw-HTTP helper: builds URLs and headers, never interprets responses."""

    def __init__(self, endpoint: str, token: str | None) -> None:
        self.endpoint = endpoint
        self.token = token or "any-token"
        self.http = requests.Session()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(
        self, method: str, path: str, identifier: str | None = None, version: str | None = DEFAULT, **kwargs: Any
    ) -> requests.Response:
        params = dict(kwargs.pop("params", {}) or {})
        if version is not None:
            params.setdefault("api-version", version)
        if identifier is not None:
            params.setdefault("identifier", identifier)
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


@pytest.fixture
def ident() -> str:
    return new_id()


@pytest.fixture(scope="session")
def bwrap_ok() -> None:
    problem = bubblewrap_problem()
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
    problem = bubblewrap_problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here: {problem}")
    assert emulator.sandbox_mode == "bubblewrap"  # auto takes bubblewrap whenever it works
    yield emulator


@pytest.fixture(scope="session")
def unisolated() -> Iterator[Any]:
    """A second emulator in the unisolated fallback mode (sandbox='none')."""
    from azure_sessions.emulator import start_emulator

    with start_emulator(token="unisolated-token", prestart=0, sandbox="none") as handle:
        yield handle


@pytest.fixture(scope="session")
def unisolated_api(unisolated) -> Api:
    return Api(unisolated.endpoint, unisolated.token)
