"""Unit-test fixtures: a scripted loopback HTTP server and clients pointed at it (retries never really sleep)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from azure_sessions import SessionsClient
from azure_sessions.retry import RetryPolicy
from tests.unit.wire_server import ScriptedServer

TOKEN = "unit-test-token"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the retry policy asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def make_client(server: ScriptedServer, sleeps: list[float]) -> Iterator[Callable[..., SessionsClient]]:
    clients: list[SessionsClient] = []

    def factory(api_version: str = "2024-10-02-preview", **kwargs) -> SessionsClient:
        kwargs.setdefault("credential", TOKEN)
        kwargs.setdefault("retry", RetryPolicy(attempts=4, sleep=sleeps.append))
        kwargs.setdefault("read_timeout", 5.0)
        client = SessionsClient(server.endpoint, "session-1", api_version=api_version, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
