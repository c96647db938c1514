"""Integration fixtures: clients and executors talking to the shared local emulator over HTTP."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from smolagents.monitoring import AgentLogger, LogLevel

from azure_sessions import SUPPORTED_API_VERSIONS, AzureDynamicSessionsExecutor, SessionsClient, SessionsError


@pytest.fixture(params=SUPPORTED_API_VERSIONS)
def api_version(request) -> str:
    return request.param


@pytest.fixture
def make_client(emulator_endpoint: str, emulator_token: str) -> Iterator[Callable[..., SessionsClient]]:
    clients: list[SessionsClient] = []

    def factory(api_version: str, identifier: str | None = None, **kwargs) -> SessionsClient:
        kwargs.setdefault("credential", emulator_token)
        client = SessionsClient(
            emulator_endpoint, identifier or f"it-{uuid.uuid4()}", api_version=api_version, **kwargs
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        with contextlib.suppress(SessionsError):  # the test may have closed or deleted it already
            client.delete_session()
        client.close()


@pytest.fixture
def client(make_client, api_version) -> SessionsClient:
    return make_client(api_version)


@pytest.fixture
def make_executor(make_client) -> Iterator[Callable[..., AzureDynamicSessionsExecutor]]:
    executors: list[AzureDynamicSessionsExecutor] = []

    def factory(api_version: str, **kwargs) -> AzureDynamicSessionsExecutor:
        kwargs.setdefault("logger", AgentLogger(level=LogLevel.OFF))
        ex = AzureDynamicSessionsExecutor(client=make_client(api_version), **kwargs)
        executors.append(ex)
        return ex

    yield factory
    for ex in executors:
        ex.cleanup()
