"""Route-by-route wire conformance for both dialects, with raw HTTP.

Each test takes ``service``: it runs against the emulator and, when ``AZURE_SESSIONS_LIVE_ENDPOINT`` names a real
pool, unchanged against that pool (see ``conftest.py``); what only the emulator decides is skipped there.
"""

from __future__ import annotations

import re
import uuid

import pytest

from azure_sessions.dialects import API_VERSIONS, ENVELOPE_VERSIONS, RESOURCE_VERSIONS
from tests.emulator.conftest import emulator_only, new_id
from tests.support.harness import wait_until

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EXEC_HEADERS = (
    "x-ms-session-guid",
    "x-ms-allocation-retries",
    "x-ms-allocation-time",
    "x-ms-preparation-time",
    "x-ms-execution-request-time",
    "x-ms-execution-read-response-time",
    "x-ms-container-execution-duration",
    "x-ms-overall-execution-time",
    "x-ms-total-execution-service-time",
)


@pytest.fixture(scope="module")
def shared_id() -> str:
    """One session reused by the shape tests of this module (keeps the pool warm for the others)."""
    return new_id()


FULL = {"codeInputType": "Inline", "executionType": "Synchronous", "timeoutInSeconds": 60}
"""The fields every version accepts besides the code."""


# -- envelope dialect (2024-02-02-preview, 2024-08-02-preview) -----------------------------------------------------
@pytest.mark.parametrize("version", ENVELOPE_VERSIONS)
def test_envelope_execute_shape(service, shared_id, version):
    response = service.execute(shared_id, "print('hello world')\n6 * 7", version=version)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["$id", "properties"] and body["$id"] == "1"
    props = body["properties"]
    assert list(props) == ["$id", "status", "stdout", "stderr", "result", "executionTimeInMilliseconds"]
    assert props["$id"] == "2"
    assert (props["status"], props["stdout"], props["stderr"], props["result"]) == ("Success", "hello world\n", "", 42)
    assert isinstance(props["executionTimeInMilliseconds"], int)
    assert GUID.match(response.headers["x-ms-session-guid"])
    assert "2024-10-02-preview" in response.headers["api-supported-versions"]


def test_envelope_failure_and_empty_result(service, shared_id):
    failed = service.execute(shared_id, "1/0", version="2024-02-02-preview").json()["properties"]
    assert (
        failed["status"] == "Failure" and "ZeroDivisionError" in failed["stderr"] and "Traceback" in failed["stderr"]
    )
    quiet = service.execute(shared_id, "x = 1", version="2024-02-02-preview", timeout=None).json()["properties"]
    assert quiet["status"] == "Success" and quiet["result"] == ""


@pytest.mark.parametrize("version", ENVELOPE_VERSIONS)
def test_envelope_files(service, shared_id, version):
    name = f"env-{version}.txt"
    uploaded = service.upload(shared_id, f"/mnt/data/{name}", b"0123456789abcdef", version=version)
    assert uploaded.status_code == 200
    body = uploaded.json()
    assert body["$id"] == "1" and len(body["value"]) == 1
    item = body["value"][0]
    assert item["$id"] == "2" and item["properties"]["$id"] == "3"
    assert item["properties"]["filename"] == name and item["properties"]["size"] == 16
    assert TIME.match(item["properties"]["lastModifiedTime"])

    listed = service.request("GET", "files", shared_id, version).json()
    assert listed["$id"] == "1"
    names = {v["properties"]["filename"]: v["properties"] for v in listed["value"]}
    assert names[name]["size"] == 16 and set(names[name]) == {"$id", "filename", "size", "lastModifiedTime"}
    ids = [v["$id"] for v in listed["value"]] + [v["properties"]["$id"] for v in listed["value"]]
    assert len(set(ids)) == len(ids)

    content = service.request("GET", f"files/content/{name}", shared_id, version)
    assert content.status_code == 200 and content.content == b"0123456789abcdef"
    assert content.headers["content-type"] == "application/octet-stream"
    meta = service.request("GET", f"files/{name}", shared_id, version).json()
    assert meta["value"][0]["properties"]["filename"] == name

    deleted = service.request("DELETE", f"files/{name}", shared_id, version)
    assert deleted.status_code == 200 and deleted.json() == {"message": "file deleted successfully"}
    assert service.request("GET", f"files/content/{name}", shared_id, version).status_code == 404


# -- resource dialect (2024-10-02-preview and later) ----------------------------------------------------------------
@pytest.mark.parametrize("version", RESOURCE_VERSIONS)
def test_resource_execute_shape_and_status_code(service, shared_id, version):
    response = service.execute(shared_id, 'print("Hello world")', version=version)
    assert response.status_code == API_VERSIONS[version].execute_status  # 202 live at 2024-10, 200 in the 2025 specs
    body = response.json()
    assert list(body) == ["$id", "id", "identifier", "executionType", "status", "result"]
    assert body["$id"] == "1" and GUID.match(body["id"])
    assert (body["identifier"], body["executionType"], body["status"]) == (shared_id, "synchronous", "Succeeded")
    result = body["result"]
    assert list(result) == ["$id", "stdout", "stderr", "executionResult", "executionTimeInMilliseconds"]
    assert (result["$id"], result["stdout"], result["stderr"], result["executionResult"]) == (
        "2",
        "Hello world\n",
        "",
        "",
    )
    for header in EXEC_HEADERS:
        assert header in response.headers, header
    assert response.headers["content-type"].startswith("application/json")


def test_resource_result_values(service, shared_id):
    cases = {
        "6 * 7": 42,
        "'nan'": "nan",
        "float('nan')": "nan",
        "True": True,
        "2.5": 2.5,
        "None": "",
        "{'a': 1}": "{'a': 1}",
        "[1, 2]": "[1, 2]",
        "x = 3": "",
        "3;": "",
    }
    for code, expected in cases.items():
        assert service.run(shared_id, code)["executionResult"] == expected, code


def test_resource_failure(service, shared_id):
    result = service.run(shared_id, "raise ValueError('boom')")
    assert result["status"] == "Failed"
    assert "ValueError: boom" in result["stderr"] and "Traceback" in result["stderr"]


def test_execute_echoes_execution_type_and_honours_operation_id(service, shared_id):
    op = str(uuid.uuid4())
    body = {**FULL, "code": "print('once')"}
    first = service.request("POST", "executions", shared_id, json=body, headers={"operation-id": op})
    assert first.json()["id"] == op and first.json()["executionType"] == "Synchronous"
    emulator_only(service, "a repeated operation-id answers with the earlier execution instead of running again")
    again = service.request("POST", "executions", shared_id, json=body, headers={"operation-id": op})
    assert again.json()["id"] == op and again.json()["result"]["stdout"] == "once\n"
    fetched = service.request("GET", f"executions/{op}", shared_id)
    assert fetched.status_code == 200 and fetched.json()["status"] == "Succeeded"


def test_base64_code_and_the_properties_envelope(service, shared_id):
    body = {**FULL, "codeInputType": "InlineBase64", "code": "cHJpbnQoMik="}
    response = service.request("POST", "executions", shared_id, "2025-10-02-preview", json=body)
    assert response.status_code == 200 and response.json()["result"]["stdout"] == "2\n"
    emulator_only(service, "a resource-dialect body inside a properties envelope (as one third-party guide sends it)")
    enveloped = service.request("POST", "executions", shared_id, "2025-10-02-preview", json={"properties": body})
    assert enveloped.status_code == 200 and enveloped.json()["result"]["stdout"] == "2\n"


def test_async_execution(service, shared_id):
    body = {
        "codeInputType": "Inline",
        "executionType": "Asynchronous",
        "code": "import time; time.sleep(0.3); print(7*9)",
        "timeoutInSeconds": 60,
    }
    started = service.request("POST", "executions", shared_id, "2025-02-02-preview", json=body)
    assert started.status_code == 202
    running = started.json()
    assert (running["status"], running["executionType"], running["identifier"]) == (
        "Running",
        "Asynchronous",
        shared_id,
    )
    assert "result" not in running
    assert started.headers["operation-id"] == running["id"]
    location = started.headers["Operation-Location"]
    assert location.startswith(service.endpoint + f"/executions/{running['id']}?")
    final = wait_until(
        lambda: (r := service.http.get(location, headers=service.headers).json())["status"] != "Running" and r
    )
    assert final["status"] == "Succeeded" and final["result"]["stdout"] == "63\n"
    assert final["result"]["$id"] == "2" and final["$id"] == "1"


@pytest.mark.parametrize("version", RESOURCE_VERSIONS)
def test_resource_files(service, shared_id, version):
    name = f"res-{version}.txt"
    uploaded = service.upload(shared_id, name, b"1234567", version=version)
    assert uploaded.status_code == 200
    body = uploaded.json()
    expected_keys = ["$id", "name", "type", "contentType", "sizeInBytes", "lastModifiedAt"]
    if version == "2025-10-02-preview":
        expected_keys.insert(2, "directory")
    assert list(body) == expected_keys
    assert (body["$id"], body["name"], body["type"], body["contentType"], body["sizeInBytes"]) == (
        "1",
        name,
        "",
        "",
        7,
    )
    assert TIME.match(body["lastModifiedAt"])

    listed = service.request("GET", "files", shared_id, version, params={"path": ""})
    assert listed.status_code == 200
    entries = {v["name"]: v for v in listed.json()["value"]}
    assert listed.json()["$id"] == "1"
    entry = entries[name]
    assert (entry["type"], entry["contentType"], entry["sizeInBytes"]) == ("file", "text/plain; charset=utf-8", 7)
    assert TIME.match(entry["lastModifiedAt"])

    meta = service.request("GET", f"files/{name}", shared_id, version, params={"path": "/mnt/data"}).json()
    assert meta["$id"] == "1" and meta["name"] == name and meta["sizeInBytes"] == 7
    content = service.request("GET", f"files/{name}/content", shared_id, version)
    assert content.content == b"1234567" and content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-length"] == "7"

    deleted = service.request("DELETE", f"files/{name}", shared_id, version)
    assert deleted.status_code == 204 and deleted.content == b""
    missing = service.request("GET", f"files/{name}", shared_id, version)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FileNotFound"


def test_files_with_directories_and_encoded_names(service, shared_id):
    name = "my report #1 (final).csv"
    assert service.upload(shared_id, name, b"a,b\n", params={"path": "reports"}).status_code == 200
    top = {v["name"]: v for v in service.request("GET", "files", shared_id).json()["value"]}
    assert top["reports"]["type"] == "directory"
    inside = service.request("GET", "files", shared_id, params={"path": "reports"}).json()["value"]
    assert [v["name"] for v in inside] == [name]
    quoted = "reports/my%20report%20%231%20%28final%29.csv"
    assert service.request("GET", f"files/{quoted}/content", shared_id).content == b"a,b\n"
    recursive = service.request("GET", "files", shared_id, "2025-10-02-preview", params={"recursive": "true"}).json()
    assert {"name": name, "directory": "reports"}.items() <= next(
        v for v in recursive["value"] if v["name"] == name
    ).items()
    assert service.request("DELETE", "files/reports", shared_id).status_code == 204


def test_written_file_appears_in_listing(service, shared_id):
    service.run(shared_id, "import pandas as pd; pd.DataFrame({'a': [1, 2]}).to_csv('/mnt/data/out.csv', index=False)")
    entries = {v["name"]: v for v in service.request("GET", "files", shared_id).json()["value"]}
    assert entries["out.csv"]["sizeInBytes"] == len(b"a\n1\n2\n")
    assert service.request("GET", "files/out.csv/content", shared_id).content == b"a\n1\n2\n"


def test_uploaded_file_is_readable_and_writable_by_code(service, shared_id):
    service.upload(shared_id, "data.txt", b"payload")
    result = service.run(
        shared_id, "open('/mnt/data/data.txt', 'a').write('+more'); open('/mnt/data/data.txt').read()"
    )
    assert result["executionResult"] == "payload+more"


# -- session and pool operations (2025-02-02-preview and later) -----------------------------------------------------
@pytest.mark.parametrize("version", ["2025-02-02-preview", "2025-10-02-preview"])
def test_session_get_list_delete(service, version):
    identifier = new_id()
    guid = service.run(identifier, "x = 1")["guid"]
    session = service.request("GET", "session", identifier, version)
    assert session.status_code == 200
    body = session.json()
    assert list(body) == ["identifier", "createdAt", "lastAccessedAt", "expireAt", "etag"]
    assert body["identifier"] == identifier and body["etag"] == guid
    assert all(TIME.match(body[k]) for k in ("createdAt", "lastAccessedAt", "expireAt"))
    assert body["expireAt"] > body["lastAccessedAt"]
    listed = service.request("GET", "listSessions", None, version).json()
    assert identifier in [s["identifier"] for s in listed["sessions"]]
    assert service.request("DELETE", "session", identifier, version).status_code == 204
    assert service.request("GET", "session", identifier, version).status_code == 404
    fresh = service.run(identifier, "'x' in dir()")
    assert fresh["executionResult"] is False and fresh["guid"] != guid
    service.request("DELETE", "session", identifier, version)


def test_metadata(service):
    body = service.request("GET", "metadata", None, "2025-02-02-preview").json()
    assert body["runtimes"][0]["name"] == "python"
    packages = {p["name"].lower() for p in body["preInstalledPackages"]}
    assert {"numpy", "pandas", "matplotlib", "ipython"} <= packages
    assert set(body) == {"runtimes", "preInstalledPackages", "createdAt", "lastUpdatedAt", "jupyterKernel"}


def test_output_streams_max_length(service, shared_id):
    long = service.execute(shared_id, "print('x' * 5000)", version="2025-10-02-preview").json()["result"]
    assert len(long["stdout"]) == 4096  # the 2025-10-02 default
    short = service.execute(shared_id, "print('x' * 50)", "2025-10-02-preview", outputStreamsMaxLength=10)
    assert short.json()["result"]["stdout"] == "x" * 10
    full = service.run(shared_id, "print('x' * 5000)")
    assert len(full["stdout"]) == 5001
    emulator_only(service, "outputStreamsMaxLength honoured at versions before the one that added it")
    older = service.execute(shared_id, "print('x' * 50)", outputStreamsMaxLength=10).json()["result"]
    assert older["stdout"] == "x" * 10


def test_stop_session_management_route(service):
    identifier = new_id()
    service.run(identifier, "1")
    response = service.request("POST", ".management/stopSession", identifier, "2025-10-02-preview")
    assert response.status_code == 200
    assert response.text == f"Session {identifier} in session pool local-pool stopped."
