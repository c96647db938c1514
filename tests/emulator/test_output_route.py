"""The emulator's live-output route (``GET .emulator/output``, an extension: the service has none) over raw HTTP: a
reader that comes before its execution reads it from the start; a finished execution reads as its output; an unknown
one ends as ``not-found`` after ``wait``; another session's execution is never found; readers are bounded."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from azure_sessions.emulator.output import MAX_READERS
from tests.emulator.conftest import new_id


def read_stream(api, identifier: str, operation: str, **params) -> list[dict]:
    response = api.request(
        "GET", ".emulator/output", identifier, params={"operation": operation, **params}, stream=True, timeout=60
    )
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.iter_lines() if line.strip()]


def text_of(messages: list[dict], stream: str = "stdout") -> str:
    return "".join(m["text"] for m in messages if m.get("stream") == stream)


def test_a_reader_that_comes_first_reads_the_execution_from_its_start(api) -> None:
    identifier, operation = new_id(), str(uuid.uuid4())
    read: list[dict] = []
    reader = threading.Thread(target=lambda: read.extend(read_stream(api, identifier, operation)))
    reader.start()
    code = "import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\nprint('two', file=sys.stderr)"
    body = {"codeInputType": "inline", "executionType": "synchronous", "code": code, "timeoutInSeconds": 30}
    response = api.request("POST", "executions", identifier, json=body, headers={"operation-id": operation})
    assert response.status_code in (200, 202), response.text
    reader.join(30)
    assert text_of(read) == "one\n" and text_of(read, "stderr") == "two\n"
    assert read[-1] == {"end": "finished"}


def test_a_finished_execution_reads_as_its_output(api) -> None:
    identifier, operation = new_id(), str(uuid.uuid4())
    body = {"codeInputType": "inline", "executionType": "synchronous", "code": "print('done')", "timeoutInSeconds": 30}
    api.request("POST", "executions", identifier, json=body, headers={"operation-id": operation}).raise_for_status()
    read = read_stream(api, identifier, operation)
    assert text_of(read) == "done\n" and read[-1] == {"end": "finished"}


def test_an_unknown_or_another_sessions_execution_is_not_found(api) -> None:
    owner, stranger, operation = new_id(), new_id(), str(uuid.uuid4())
    body = {"codeInputType": "inline", "executionType": "synchronous", "code": "print('mine')", "timeoutInSeconds": 30}
    api.request("POST", "executions", owner, json=body, headers={"operation-id": operation}).raise_for_status()
    assert read_stream(api, stranger, operation, wait="0.2") == [{"end": "not-found"}]
    assert read_stream(api, owner, str(uuid.uuid4()), wait="0.2") == [{"end": "not-found"}]


@pytest.mark.parametrize("operation", ["", "x" * 129])
def test_a_missing_or_overlong_operation_is_a_clear_400(api, operation) -> None:
    response = api.request("GET", ".emulator/output", new_id(), params={"operation": operation})
    assert response.status_code == 400 and "operation=" in response.json()["error"]["message"]


def test_readers_of_one_execution_are_bounded(api) -> None:
    identifier, operation = new_id(), str(uuid.uuid4())
    params = {"operation": operation, "wait": "5"}
    opened = [
        api.request("GET", ".emulator/output", identifier, params=params, stream=True, timeout=30)
        for _ in range(MAX_READERS + 1)
    ]
    try:
        statuses = sorted(response.status_code for response in opened)
        assert statuses == [200] * MAX_READERS + [429]
        refused = next(response for response in opened if response.status_code == 429)
        assert refused.headers["Retry-After"] and "reader" in refused.json()["error"]["message"]
    finally:
        for response in opened:
            response.close()
