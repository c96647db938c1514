"""A full pool answers 404 (Microsoft Learn) by default, 429 when configured to, and on demand through a fault rule.

Not checked against a real pool: filling one takes ``maxConcurrentSessions`` sessions (written down in
docs/emulator-fidelity.md).
"""

from __future__ import annotations

import pytest
import requests

from azure_sessions.emulator import start_emulator
from tests.emulator.conftest import Api, new_id


@pytest.fixture(scope="module", params=[404, 429])
def full_pool(request):
    """An emulator of one session, refusing a second identifier with the parametrized status."""
    with start_emulator(token="t", max_sessions=1, prestart=0, pool_full_status=request.param) as emu:
        api = Api(emu.endpoint, "t")
        holder = new_id()
        assert api.run(holder, "1")["status"] == "Succeeded"
        yield request.param, api, holder


def assert_full(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "MaxConcurrentSessionsReached"
    assert response.headers["x-ms-error-code"] == "MaxConcurrentSessionsReached"
    assert "maximum of 1 concurrent sessions" in response.json()["error"]["message"]
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    "call",
    [
        lambda api, ident: api.execute(ident, "1"),
        lambda api, ident: api.execute(ident, "1", version="2024-02-02-preview", timeout=None),
        lambda api, ident: api.upload(ident, "a.txt", b"a"),
        lambda api, ident: api.request("GET", "files", ident),
    ],
    ids=["execute", "execute-2024-02", "upload", "list"],
)
def test_a_new_identifier_gets_the_configured_status(full_pool, call):
    status, api, _ = full_pool
    assert_full(call(api, new_id()), status)


def test_the_session_in_the_pool_still_runs(full_pool):
    _, api, holder = full_pool
    assert api.run(holder, "2")["status"] == "Succeeded"


def test_the_status_option_is_checked():
    with pytest.raises(ValueError, match="404, 429"):
        start_emulator(token="t", prestart=0, pool_full_status=503)


@pytest.mark.parametrize("status", [None, 404, 429])
def test_a_fault_rule_makes_a_pool_answer_full(api, status):
    rule = "full:count=1:path=executions" + (f":status={status}" if status else "")
    assert api.request("PUT", ".emulator/faults", version=None, json={"rules": [rule]}).status_code == 200
    try:
        assert_full_reply = api.execute(new_id(), "1")
        assert assert_full_reply.status_code == (status or 404)
        assert assert_full_reply.json()["error"]["code"] == "MaxConcurrentSessionsReached"
        assert api.execute(new_id(), "1").status_code == 202  # count=1: the next one is served
    finally:
        api.request("DELETE", ".emulator/faults", version=None)
