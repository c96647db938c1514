"""Retries: idempotent calls retry transient failures; a reached execute is never sent twice."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate
from types import SimpleNamespace

import pytest
import requests

from azure_sessions import SessionsClient
from azure_sessions.errors import ServiceError, ServiceRequestError, ServiceResponseError, ThrottledError
from azure_sessions.retry import RetryPolicy, is_connect_failure, parse_retry_after
from tests.unit import recordings as rec
from tests.unit.wire_server import Reply, closed_port


def test_idempotent_call_retries_429_and_503_honouring_retry_after(server, make_client, sleeps):
    server.reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, headers={"Retry-After": "7"})
    server.reply(503, {"error": {"code": "Unavailable", "message": "busy"}}, headers={"retry-after-ms": "1500"})
    server.reply(200, rec.LIST_2410)
    files = make_client().list_files()
    assert [f.name for f in files] == ["cert.txt"]
    assert sleeps == [7.0, 1.5]
    assert len(server.requests) == 3


def test_retry_after_http_date(server, make_client, sleeps):
    server.reply(503, None, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    server.reply(200, rec.LIST_2410_EMPTY)
    assert make_client().list_files() == []
    assert 25 <= sleeps[0] <= 31


def test_backoff_without_retry_after_then_give_up(server, make_client, sleeps):
    for _ in range(4):
        server.reply(502, {"error": {"code": "BadGateway", "message": "upstream"}})
    with pytest.raises(ServiceError) as info:
        make_client().get_session()
    assert info.value.status_code == 502 and info.value.error_code == "BadGateway"
    assert len(server.requests) == 4 and len(sleeps) == 3
    assert sleeps[0] < sleeps[1] < sleeps[2]  # exponential (jitter is only ±20 %)


def test_execute_is_not_retried_on_503(server, make_client, sleeps):
    server.reply(503, {"error": {"code": "Unavailable", "message": "busy"}})
    with pytest.raises(ServiceError):
        make_client().execute("x = 1")
    assert len(server.requests) == 1 and sleeps == []


def test_execute_is_retried_on_429(server, make_client, sleeps):
    server.reply(429, None, headers={"Retry-After": "2"})
    server.reply(202, rec.EXECUTE_2410)
    assert make_client().execute("print('Hello world')").stdout == "Hello world\n"
    assert len(server.requests) == 2 and sleeps == [2.0]


def test_execute_sends_one_operation_id_per_execution_reused_on_retry(server, make_client, sleeps):
    server.reply(429, None, headers={"Retry-After": "1"})
    server.reply(202, rec.EXECUTE_2410)
    server.reply(202, rec.EXECUTE_2410)
    client = make_client()
    client.execute("print('Hello world')")
    client.execute("print('Hello world')")
    first, retry, second = (r.headers.get("operation-id") for r in server.requests)
    assert first and first == retry  # the service can recognise the retry as the same execution
    assert second and second != first


def test_execute_429_with_retry_after_exhausted(server, make_client, sleeps):
    for _ in range(4):
        server.reply(429, {"error": {"code": "TooManyRequests", "message": "slow"}}, headers={"Retry-After": "3"})
    with pytest.raises(ThrottledError):
        make_client().execute("1")
    assert len(server.requests) == 4 and sleeps == [3.0, 3.0, 3.0]


def test_reached_execute_is_never_sent_twice(server, make_client, sleeps):
    server.queue(Reply(drop=True))  # the server reads the request, then hangs up without answering
    with pytest.raises(ServiceResponseError, match="may or may not have run"):
        make_client().execute("launch_missiles()")
    assert len(server.requests) == 1
    assert server.requests[0].json["code"] == "launch_missiles()"
    assert sleeps == []


def test_execute_read_timeout_is_not_retried(server, make_client, sleeps, monkeypatch):
    import azure_sessions.client as client_module

    release = threading.Event()

    def slow(_req):
        release.wait(5)
        return Reply(202, rec.EXECUTE_2410)

    # read timeout = min(timeout, 220) + margin: make it 0.2 s for the test
    monkeypatch.setattr(client_module, "EXECUTE_READ_MARGIN_SECONDS", -0.8)
    server.queue(slow)
    try:
        with pytest.raises(ServiceResponseError, match="no reply"):
            make_client().execute("x", timeout=1)
    finally:
        release.set()
    assert len(server.requests) == 1 and sleeps == []


def test_dropped_idempotent_call_is_retried(server, make_client, sleeps):
    server.queue(Reply(drop=True))
    server.reply(200, rec.LIST_2410)
    assert len(make_client().list_files()) == 1
    assert len(server.requests) == 2 and len(sleeps) == 1


def test_connect_failure_is_retried_even_for_execute_then_reported(sleeps):
    endpoint = f"http://127.0.0.1:{closed_port()}/subscriptions/s/resourceGroups/r/sessionPools/p"
    client = SessionsClient(endpoint, credential="t", retry=RetryPolicy(attempts=3, sleep=sleeps.append))
    with client, pytest.raises(ServiceRequestError, match="could not connect"):
        client.execute("print(1)")
    assert len(sleeps) == 2


def test_401_refreshes_once_and_retries(server, make_client, sleeps):
    tokens = iter(["expired-token", "fresh-token"])
    calls = []

    def get_token(*scopes):
        calls.append(scopes)
        return SimpleNamespace(token=next(tokens), expires_on=time.time() + 3600)

    server.reply(401, {"error": {"code": "InvalidToken", "message": "expired"}})
    server.reply(202, rec.EXECUTE_2410)
    result = make_client(credential=SimpleNamespace(get_token=get_token)).execute("print(1)")
    assert result.succeeded
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer expired-token", "Bearer fresh-token"]
    assert len(calls) == 2 and sleeps == []


def test_401_twice_gives_up(server, make_client):
    counter = iter(range(100))

    def get_token(*scopes):
        return SimpleNamespace(token=f"t{next(counter)}", expires_on=time.time() + 3600)

    server.reply(401, None)
    server.reply(401, {"error": {"code": "InvalidAudience", "message": "wrong aud"}})
    from azure_sessions.errors import ClientAuthenticationError

    with pytest.raises(ClientAuthenticationError) as info:
        make_client(credential=SimpleNamespace(get_token=get_token)).list_files()
    assert info.value.error_code == "InvalidAudience" and len(server.requests) == 2


def test_retried_delete_tolerates_404(server, make_client):
    server.queue(Reply(drop=True))  # the first delete may have happened
    server.reply(404, {"error": {"code": "FileNotFound", "message": "gone"}})
    make_client().delete_file("a.txt")
    assert len(server.requests) == 2


def test_retried_upload_rewinds_the_file(server, make_client, tmp_path, sleeps):
    from tests.unit.test_client_wire import multipart_file

    server.reply(503, None)
    server.reply(200, rec.UPLOAD_2410)
    path = tmp_path / "cert.txt"
    path.write_bytes(b"cert!!\n")
    make_client().upload(path)
    assert [multipart_file(r)[1] for r in server.requests] == [b"cert!!\n", b"cert!!\n"]


def test_policy_helpers():
    assert parse_retry_after({"retry-after": "garbage"}) is None
    assert parse_retry_after({}) is None
    assert RetryPolicy(max_retry_after=5).delay(1, {"retry-after": "600"}) == 5
    assert RetryPolicy(jitter=0).backoff(10) == 20.0
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    assert RetryPolicy.no_retries().attempts == 1
    assert not is_connect_failure(requests.exceptions.ReadTimeout())
    assert is_connect_failure(requests.exceptions.ConnectTimeout())
    assert not is_connect_failure(requests.exceptions.ConnectionError("Connection aborted."))


def test_each_retry_is_logged_at_debug_without_the_token_or_the_session(server, make_client, sleeps, caplog):
    tokens = iter(["rejected-secret-token", "fresh-secret-token"])

    def get_token(*scopes):
        return SimpleNamespace(token=next(tokens), expires_on=time.time() + 3600)

    server.reply(401, None)
    server.reply(503, None, headers={"Retry-After": "3"})
    server.queue(Reply(drop=True))
    server.reply(200, rec.LIST_2410)
    caplog.set_level("DEBUG", logger="azure_sessions")
    assert len(make_client(credential=SimpleNamespace(get_token=get_token)).list_files()) == 1
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("azure_sessions")]
    assert all(r.levelname == "DEBUG" for r in caplog.records if r.name.startswith("azure_sessions"))
    assert any("list files" in line and "401" in line for line in lines), lines
    assert any("attempt 1 of 4" in line and "HTTP 503" in line and "3.00 s" in line for line in lines), lines
    assert any("attempt 2 of 4" in line and "ConnectionError" in line for line in lines), lines
    assert len(lines) == 3 and len(sleeps) == 2
    for line in lines:
        assert "secret-token" not in line and "session-1" not in line


def test_the_policy_decides_which_failures_are_retried():
    policy = RetryPolicy(attempts=3, jitter=0)
    dropped = requests.exceptions.ConnectionError("Connection aborted.")
    refused = requests.exceptions.ConnectTimeout()
    assert policy.delay_after_failure(1, dropped, idempotent=True) == 0.5
    assert policy.delay_after_failure(1, dropped, idempotent=False) is None  # it may have reached the service
    assert policy.delay_after_failure(2, refused, idempotent=False) == 1.0  # it provably never did
    assert policy.delay_after_failure(3, refused, idempotent=True) is None  # attempts used up
    assert policy.delay_after_reply(1, 503, {"retry-after": "4"}, idempotent=True) == 4.0
    assert policy.delay_after_reply(1, 503, {}, idempotent=False) is None
    assert policy.delay_after_reply(1, 429, {"retry-after": "1"}, idempotent=False) == 1.0
    assert policy.delay_after_reply(1, 429, {}, idempotent=True) is None  # a full pool: nothing says when
    assert policy.delay_after_reply(1, 404, {}, idempotent=True) is None
    assert policy.delay_after_reply(3, 429, {}, idempotent=True) is None
