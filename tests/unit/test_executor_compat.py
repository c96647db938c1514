"""Code written for the smolagents proposal's ``AzureDynamicSessionsExecutor`` runs unchanged against this one.

The proposal's constructor: ``(additional_imports, logger, allow_pickle=False, *, pool_management_endpoint,
session_id=None, access_token_provider=None, managed_identity_client_id=None, api_version="2024-10-02-preview")``.
"""

from __future__ import annotations

import inspect
import time
from types import SimpleNamespace

import pytest
from smolagents.monitoring import AgentLogger, LogLevel

from azure_sessions import AzureDynamicSessionsExecutor
from azure_sessions.auth import MANAGED_IDENTITY_ENV
from azure_sessions.executor import POOL_ENDPOINT_ENV
from tests.unit import recordings as rec
from tests.unit.wire_server import Reply


def _proposal_init(
    self,
    additional_imports: list[str],
    logger,
    allow_pickle: bool = False,
    *,
    pool_management_endpoint: str,
    session_id: str | None = None,
    access_token_provider=None,
    managed_identity_client_id: str | None = None,
    api_version: str = "2024-10-02-preview",
): ...


def quiet() -> AgentLogger:
    return AgentLogger(level=LogLevel.OFF)


@pytest.fixture
def executors():
    made: list[AzureDynamicSessionsExecutor] = []
    yield made
    for executor in made:
        executor.client.close()


def test_every_proposal_parameter_has_its_place_and_default():
    ours = inspect.signature(AzureDynamicSessionsExecutor.__init__).parameters
    theirs = inspect.signature(_proposal_init).parameters
    for name, param in theirs.items():
        assert name in ours, f"{name} is missing"
        assert ours[name].kind == param.kind, f"{name} is {ours[name].kind}, the proposal has {param.kind}"
        if param.default is not inspect.Parameter.empty:
            assert ours[name].default == param.default, name
    positional = [n for n, p in theirs.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert list(ours)[: len(positional)] == positional


def test_proposal_calls_reach_the_pool_as_documented(server, executors):
    tokens = iter(["token-1", "token-2"])
    positional = AzureDynamicSessionsExecutor(
        [],
        quiet(),
        pool_management_endpoint=server.endpoint,
        session_id="proposal-session",
        access_token_provider=lambda: next(tokens),
    )
    keywords = AzureDynamicSessionsExecutor(
        additional_imports=[],
        logger=quiet(),
        allow_pickle=False,
        pool_management_endpoint=server.endpoint,
        session_id="other-session",
        access_token_provider=lambda: "token-k",
        managed_identity_client_id="ignored-with-a-provider",
        api_version="2024-10-02-preview",
    )
    executors += [positional, keywords]
    server.queue(Reply(202, rec.resource_execution(stdout="1\n")), Reply(202, rec.resource_execution(stdout="2\n")))
    assert positional("print(1)").logs == "1\n"
    assert keywords("print(2)").logs == "2\n"
    first, second = server.requests
    assert (first.method, first.path, first.query["identifier"]) == ("POST", "executions", "proposal-session")
    assert first.query["api-version"] == "2024-10-02-preview" and first.json["code"] == "print(1)"
    assert first.headers["authorization"] == "Bearer token-1"
    assert (second.query["identifier"], second.headers["authorization"]) == ("other-session", "Bearer token-k")


def test_access_token_provider_is_asked_again_when_its_token_is_refused(server, executors):
    calls = []

    def provider() -> str:
        calls.append(len(calls))
        return f"token-{len(calls)}"

    executor = AzureDynamicSessionsExecutor(
        [], quiet(), pool_management_endpoint=server.endpoint, access_token_provider=provider
    )
    executors.append(executor)
    server.queue(
        Reply(401, {"error": {"code": "Unauthorized", "message": "expired"}}),
        Reply(202, rec.resource_execution(value=7)),
    )
    assert executor("7").output == 7
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer token-1", "Bearer token-2"]


def test_managed_identity_client_id_and_its_variable_reach_the_default_credential(monkeypatch, server, executors):
    import azure.identity

    built: list[dict] = []

    class FakeDefaultCredential:  # Azure's own credential chain cannot run here
        def __init__(self, **kwargs):
            built.append(kwargs)

        def get_token(self, *scopes):
            return SimpleNamespace(token="mi-token", expires_on=time.time() + 3600)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeDefaultCredential)
    monkeypatch.setenv(MANAGED_IDENTITY_ENV, "client-id-from-env")
    server.fallback = lambda _request: Reply(202, rec.resource_execution())
    for kwargs in ({"managed_identity_client_id": "explicit-client-id"}, {}):
        executor = AzureDynamicSessionsExecutor([], quiet(), pool_management_endpoint=server.endpoint, **kwargs)
        executors.append(executor)
        executor("1")
    assert built == [
        {"managed_identity_client_id": "explicit-client-id"},
        {"managed_identity_client_id": "client-id-from-env"},
    ]
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer mi-token"}
    with_provider = AzureDynamicSessionsExecutor(
        [], quiet(), pool_management_endpoint=server.endpoint, access_token_provider=lambda: "own-token"
    )
    executors.append(with_provider)
    with_provider("1")
    assert len(built) == 2, "the variable is ignored when a token provider is given"


def test_api_version_selects_the_wire_format_it_names(server, executors):
    executor = AzureDynamicSessionsExecutor(
        [], quiet(), pool_management_endpoint=server.endpoint, access_token_provider=lambda: "t",
        api_version="2024-02-02-preview",
    )  # fmt: skip
    executors.append(executor)
    server.queue(Reply(200, rec.envelope_execution(stdout="old\n")), Reply(204))
    assert executor("print('old')").logs == "old\n"
    request = server.requests[0]
    assert (request.path, request.query["api-version"]) == ("code/execute", "2024-02-02-preview")
    assert request.json["properties"]["code"] == "print('old')"
    executor.cleanup()
    delete = server.requests[1]
    assert (delete.method, delete.path, delete.query["api-version"]) == ("DELETE", "session", "2025-02-02-preview")


def test_download_file_without_a_destination_returns_the_bytes(server, executors):
    executor = AzureDynamicSessionsExecutor(
        [], quiet(), pool_management_endpoint=server.endpoint, access_token_provider=lambda: "t"
    )
    executors.append(executor)
    server.queue(Reply(200, body=b"\x00bytes\xff"))
    assert executor.download_file("/mnt/data/out.bin") == b"\x00bytes\xff"
    assert server.requests[0].path == "files/out.bin/content"


def test_misuse_is_refused_with_the_fix(monkeypatch, server):
    monkeypatch.delenv(POOL_ENDPOINT_ENV, raising=False)
    with pytest.raises(ValueError, match=POOL_ENDPOINT_ENV):
        AzureDynamicSessionsExecutor([], quiet())
    with pytest.raises(TypeError, match="pool_management_endpoint="):
        AzureDynamicSessionsExecutor(server.endpoint)
    with pytest.raises(ValueError, match="not both"):
        AzureDynamicSessionsExecutor(
            pool_management_endpoint=server.endpoint, credential="t", access_token_provider=lambda: "t"
        )
    with pytest.raises(TypeError, match="callable"):
        AzureDynamicSessionsExecutor(pool_management_endpoint=server.endpoint, access_token_provider="a-token")
    assert server.requests == []
