"""Credential adapter: caching, single refresh under contention, invalidation, redaction."""

from __future__ import annotations

import base64
import builtins
import json
import threading
import time
from types import SimpleNamespace

import pytest

from azure_sessions.auth import DEFAULT_SCOPE, MANAGED_IDENTITY_ENV, TokenProvider
from azure_sessions.errors import CredentialUnavailableError


class CountingCredential:
    """A TokenCredential that hands out token-1, token-2, ... and counts calls."""

    def __init__(self, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.lifetime = lifetime
        self.delay = delay
        self._lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self._lock:
            self.calls += 1
            n = self.calls
        self.scopes.append(scopes)
        if self.delay:
            time.sleep(self.delay)
        return SimpleNamespace(token=f"token-{n}", expires_on=int(time.time() + self.lifetime))


def test_sixteen_threads_cause_exactly_one_refresh():
    cred = CountingCredential(delay=0.05)
    provider = TokenProvider(cred)
    barrier = threading.Barrier(16)
    results: list[str] = []

    def worker():
        barrier.wait()
        results.append(provider.get_token())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cred.calls == 1
    assert results == ["token-1"] * 16
    assert cred.scopes == [(DEFAULT_SCOPE,)]


def test_cached_until_five_minutes_before_expiry():
    now = [1_000_000.0]
    cred = SimpleNamespace(calls=0)

    def get_token(*scopes):
        cred.calls += 1
        return SimpleNamespace(token=f"t{cred.calls}", expires_on=now[0] + 3600)

    cred.get_token = get_token
    provider = TokenProvider(cred, clock=lambda: now[0])
    assert provider.get_token() == "t1"
    now[0] += 3600 - 301
    assert provider.get_token() == "t1"
    now[0] += 2  # now within the 5-minute margin
    assert provider.get_token() == "t2"
    assert cred.calls == 2


def test_refresh_failure_keeps_a_still_valid_token():
    now = [0.0]
    calls = []

    def get_token(*scopes):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("identity endpoint down")
        return SimpleNamespace(token="t1", expires_on=3600)

    provider = TokenProvider(SimpleNamespace(get_token=get_token), clock=lambda: now[0])
    assert provider.get_token() == "t1"
    now[0] = 3400  # in the refresh window, not expired
    assert provider.get_token() == "t1"
    now[0] = 3700  # expired: the failure surfaces
    with pytest.raises(CredentialUnavailableError):
        provider.get_token()


def test_invalidate_forces_one_refresh_and_ignores_stale_tokens():
    cred = CountingCredential()
    provider = TokenProvider(cred)
    assert provider.get_token() == "token-1"
    assert provider.invalidate("token-1") is True
    assert provider.get_token() == "token-2"
    assert provider.invalidate("token-1") is True  # someone else already replaced it: nothing dropped
    assert provider.get_token() == "token-2"
    assert cred.calls == 2


def test_static_token_never_refreshes():
    provider = TokenProvider("static-secret")
    assert provider.get_token() == "static-secret"
    assert provider.invalidate("static-secret") is False
    assert provider.is_static


def test_callable_with_jwt_expiry_and_plain_string():
    exp = int(time.time()) + 3600
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    jwt = f"eyJhbGciOiJub25lIn0.{payload}.sig"
    calls = []

    def fetch():
        calls.append(1)
        return jwt

    provider = TokenProvider(fetch)
    assert provider.get_token() == jwt and provider.get_token() == jwt
    assert len(calls) == 1
    assert TokenProvider(lambda: "plain").get_token() == "plain"


def test_repr_never_shows_the_token():
    provider = TokenProvider("super-secret-token")
    provider.get_token()
    assert "super-secret-token" not in repr(provider)
    assert "redacted" in repr(provider)


def test_unsupported_credential_type():
    with pytest.raises(TypeError, match="get_token"):
        TokenProvider(42)


def test_default_credential_missing_azure_identity(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("azure.identity"):
            raise ImportError("No module named 'azure.identity'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    provider = TokenProvider(None)  # constructing is fine: the import is lazy
    with pytest.raises(CredentialUnavailableError, match="pip install azure-identity"):
        provider.get_token()


def test_default_credential_uses_managed_identity_from_env(monkeypatch):
    import azure.identity

    seen = {}

    class FakeDefault:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_token(self, *scopes):
            return SimpleNamespace(token="mi-token", expires_on=time.time() + 3600)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeDefault)
    monkeypatch.setenv(MANAGED_IDENTITY_ENV, "client-id-from-env")
    assert TokenProvider(None).get_token() == "mi-token"
    assert seen == {"managed_identity_client_id": "client-id-from-env"}
    seen.clear()
    TokenProvider(None, managed_identity_client_id="explicit").get_token()
    assert seen == {"managed_identity_client_id": "explicit"}


def test_sixteen_concurrent_client_calls_fetch_one_token(server, make_client):
    from tests.unit import recordings as rec
    from tests.unit.wire_server import Reply

    server.fallback = lambda _req: Reply(200, rec.LIST_2410_EMPTY)
    cred = CountingCredential(delay=0.05)
    client = make_client(credential=cred)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def worker():
        barrier.wait()
        try:
            client.list_files()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and cred.calls == 1
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer token-1"}
    assert len(server.requests) == 16


def test_one_default_credential_serves_many_clients_with_one_token(monkeypatch, server):
    import azure.identity

    from azure_sessions import SessionsClient
    from azure_sessions.auth import DefaultCredential
    from tests.unit import recordings as rec
    from tests.unit.wire_server import Reply

    built: list[CountingCredential] = []

    def fake_default(**kwargs):  # Azure's own credential chain cannot run here
        built.append(CountingCredential())
        return built[-1]

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", fake_default)
    server.fallback = lambda _req: Reply(200, rec.LIST_2410_EMPTY)
    shared = DefaultCredential()
    assert built == [], "nothing is built before a token is needed"
    clients = [SessionsClient(server.endpoint, f"session-{n}", shared) for n in range(3)]
    try:
        for client in clients:
            client.list_files()
    finally:
        for client in clients:
            client.close()
    assert len(built) == 1 and built[0].calls == 1
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer token-1"}
    assert "DefaultAzureCredential" in repr(clients[0])
