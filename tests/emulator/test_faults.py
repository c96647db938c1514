"""Fault injection over HTTP: throttling, server errors, delays, dropped connections, forced expiry, counters."""

from __future__ import annotations

import time

import pytest
import requests

from azure_sessions.emulator import start_emulator
from azure_sessions.emulator.faults import parse_rules
from tests.emulator.conftest import Api, new_id


@pytest.fixture(scope="module")
def faulty():
    with start_emulator(token="fault-token", prestart=1, faults="500:count=0") as emu:
        yield emu


@pytest.fixture
def fapi(faulty) -> Api:
    faulty.faults.clear()
    yield Api(faulty.endpoint, "fault-token")
    faulty.faults.clear()


def admin(fapi: Api, method: str, path: str, **kwargs) -> requests.Response:
    return fapi.request(method, f".emulator/{path}", version=None, **kwargs)


def test_faults_from_start_argument_and_env(monkeypatch):
    monkeypatch.setenv("AZURE_SESSIONS_EMULATOR_FAULTS", "503:count=1;delay:seconds=0.1")
    with start_emulator(prestart=0, sandbox="none") as emu:
        assert [r["kind"] for r in emu.faults.rules()] == ["status", "delay"]


def test_429_with_retry_after_before_processing(fapi, faulty):
    identifier = new_id()
    fapi.run(identifier, "x = 0")
    before = faulty.execution_count(identifier)
    put = admin(fapi, "PUT", "faults", json={"rules": ["429:count=1:retry_after=2:path=executions"]})
    assert put.status_code == 200 and put.json()["rules"][0]["status"] == 429
    throttled = fapi.execute(identifier, "x += 1")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["code"] == "TooManyRequests" == throttled.headers["x-ms-error-code"]
    assert faulty.execution_count(identifier) == before  # nothing ran
    assert fapi.run(identifier, "x += 1\nx")["executionResult"] == 1
    assert admin(fapi, "GET", "faults").json()["fired"] == {"429": 1}


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(fapi, status):
    fapi.request("PUT", ".emulator/faults", version=None, json={"rules": [{"kind": status, "count": 1}]})
    response = fapi.request("GET", "files", new_id())
    assert response.status_code == status and response.json()["error"]["message"].startswith("Injected fault")


def test_after_phase_runs_the_code_but_replaces_the_answer(fapi, faulty):
    identifier = new_id()
    fapi.run(identifier, "x = 0")
    faulty.faults.set_rules(parse_rules("503:count=1:phase=after:path=executions"))
    assert fapi.execute(identifier, "x += 1").status_code == 503
    assert fapi.run(identifier, "x")["executionResult"] == 1  # the lost reply's code did run, once


def test_dropped_connection_before_and_after(fapi, faulty):
    identifier = new_id()
    fapi.run(identifier, "x = 0")
    admin(fapi, "PUT", "faults", json={"rules": ["drop:count=1:path=executions"]})
    with pytest.raises(requests.ConnectionError):
        fapi.execute(identifier, "x += 1")
    admin(fapi, "PUT", "faults", json={"rules": ["drop:count=1:path=executions:phase=after"]})
    with pytest.raises(requests.ConnectionError):
        fapi.execute(identifier, "x += 10")
    assert fapi.run(identifier, "x")["executionResult"] == 10
    log = admin(fapi, "GET", "executions", params={"identifier": identifier}).json()
    assert [e["code"] for e in log["executions"]] == ["x = 0", "x += 10", "x"]
    assert log["count"] == 3


def test_delay(fapi):
    identifier = new_id()
    fapi.run(identifier, "1")
    admin(fapi, "PUT", "faults", json={"rules": ["delay:seconds=0.5:count=1:method=GET"]})
    started = time.monotonic()
    assert fapi.request("GET", "files", identifier).status_code == 200
    assert time.monotonic() - started >= 0.5


def test_forced_expiry_by_fault_and_admin_route(fapi):
    identifier = new_id()
    guid = fapi.run(identifier, "x = 1")["guid"]
    admin(fapi, "PUT", "faults", json={"rules": ["expire:count=1:path=executions"]})
    after_fault = fapi.run(identifier, "'x' in dir()")
    assert after_fault["executionResult"] is False and after_fault["guid"] != guid
    expired = admin(fapi, "POST", "expire", params={"identifier": identifier})
    assert expired.json() == {"expired": 1}
    assert fapi.run(identifier, "1")["guid"] not in (guid, after_fault["guid"])
    assert admin(fapi, "POST", "expire").status_code == 400


def test_admin_routes_need_the_token(fapi):
    url = f"{fapi.endpoint}/.emulator/faults"
    assert requests.put(url, json={"rules": ["429"]}, timeout=10).status_code == 401
    assert (
        requests.put(url, json={"rules": ["429"]}, headers={"Authorization": "Bearer x"}, timeout=10).status_code
        == 401
    )
    assert admin(fapi, "PUT", "faults", json={"rules": ["teapot"]}).status_code == 400
    assert admin(fapi, "DELETE", "faults").status_code == 204
    assert admin(fapi, "GET", "faults").json()["rules"] == []


def test_admin_routes_are_never_faulted(fapi):
    admin(fapi, "PUT", "faults", json={"rules": ["503"]})
    assert admin(fapi, "GET", "faults").status_code == 200
    assert fapi.request("GET", "files", new_id()).status_code == 503
    assert admin(fapi, "DELETE", "faults").status_code == 204
