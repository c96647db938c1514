"""An Azure pool cannot stream an execution's output: the client sends no stream request and never calls
``on_output`` (the endpoint is classified as Azure's; the replies come from a loopback server that records every
request)."""

from __future__ import annotations

from azure_sessions.endpoint import PoolEndpoint
from tests.unit import recordings as rec
from tests.unit.wire_server import Reply


def test_an_azure_pool_gets_no_stream_request_and_on_output_is_never_called(server, make_client, monkeypatch):
    monkeypatch.setattr(PoolEndpoint, "is_azure", property(lambda self: True))
    server.reply(202, rec.EXECUTE_2410, headers=rec.EXECUTE_2410_HEADERS)
    client = make_client()
    assert client.supports_live_output is False
    heard: list[tuple[str, str]] = []
    result = client.execute('print("Hello world")', on_output=lambda stream, text: heard.append((stream, text)))
    assert result.stdout == "Hello world\n" and heard == []
    assert [(r.method, r.path) for r in server.requests] == [("POST", "executions")]


def test_another_endpoint_is_asked_for_the_stream(server, make_client):
    """The same client on an endpoint that is not Azure's asks for the stream (here the server has no such route,
    as the service would answer: remembered, and not asked again)."""
    unknown = Reply(404, {"error": {"code": "NotFound", "message": "no such operation"}})
    executed = Reply(202, rec.EXECUTE_2410, headers=rec.EXECUTE_2410_HEADERS)
    server.fallback = lambda received: executed if received.path == "executions" else unknown
    client = make_client()
    assert client.supports_live_output is None
    result = client.execute('print("Hello world")', on_output=lambda stream, text: None)
    assert result.stdout == "Hello world\n"
    assert sorted(r.path for r in server.requests) == [".emulator/output", "executions"]
    assert client.supports_live_output is False
