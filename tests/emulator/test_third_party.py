"""Other clients' exact requests, as raw HTTP, and the reply fields each of them reads.

The packages are not installed here (they would pull in their frameworks); each request is built the way the
client's source builds it (see /work/shared/reference/azure-sessions-api.md §7 for the sources):

* LangChain ``SessionsPythonREPLTool`` (langchain-azure-dynamic-sessions 1.0.x, ``tools/sessions.py``);
* AutoGen ``ACADynamicSessionsCodeExecutor`` (autogen-ext ``code_executors/azure``);
* Semantic Kernel Python ``SessionsPythonTool`` and .NET ``SessionsPythonPlugin``;
* LlamaIndex ``AzureCodeInterpreterToolSpec``; LangChain.js ``SessionsPythonREPLTool``.

They run against the emulator, and unchanged against a real pool with ``AZURE_SESSIONS_LIVE_ENDPOINT``.
"""

from __future__ import annotations

import base64
import uuid
from urllib.parse import quote

import pytest
import requests

from tests.emulator.conftest import Api

ENVELOPE_BODY = {"codeInputType": "inline", "executionType": "synchronous"}


def url(service: Api, path: str, query: str) -> str:
    """The clients' own URL building: the endpoint, a slash, the path, ``?`` and a hand-written query."""
    return f"{service.endpoint}/{path}?{query}"


def langchain_query(session_id: str, version: str = "2024-02-02-preview") -> str:
    return f"identifier={quote(session_id)}&api-version={version}"


@pytest.fixture
def session_id(service) -> str:
    identifier = str(uuid.uuid4())
    service.identifiers.add(identifier)  # freed at the end of a live run
    return identifier


def test_langchain_python_repl_tool(service, session_id):
    headers = {**service.headers, "User-Agent": "langchain-azure-dynamic-sessions/1.0.3 (Language=Python)"}
    body = {"properties": {**ENVELOPE_BODY, "code": "print('hello world')\n6 * 7"}}  # no timeoutInSeconds
    executed = requests.post(url(service, "code/execute", langchain_query(session_id)), headers=headers, json=body)
    executed.raise_for_status()
    properties = executed.json().get("properties", {})
    assert (properties["result"], properties["stdout"], properties["stderr"]) == (42, "hello world\n", "")

    files = [("file", ("report.csv", b"a,b\n1,2\n", "application/octet-stream"))]
    uploaded = requests.request(
        "POST", url(service, "files/upload", langchain_query(session_id)), headers=headers, data={}, files=files
    )
    uploaded.raise_for_status()
    meta = uploaded.json()["value"][0]["properties"]
    assert (meta["filename"], meta["size"]) == ("report.csv", 8)

    path = quote("report.csv")
    downloaded = requests.get(url(service, f"files/content/{path}", langchain_query(session_id)), headers=headers)
    downloaded.raise_for_status()
    assert downloaded.content == b"a,b\n1,2\n"

    listed = requests.get(url(service, "files", langchain_query(session_id)), headers=headers)
    listed.raise_for_status()
    assert "report.csv" in [entry["properties"]["filename"] for entry in listed.json()["value"]]

    deleted = requests.delete(
        url(service, "session", langchain_query(session_id, "2025-10-02-preview")), headers=headers
    )  # delete_session(): the 2025-10 route beside the 2024-02 calls
    deleted.raise_for_status()


def test_langchain_image_result(service, session_id):
    code = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
    body = {"properties": {**ENVELOPE_BODY, "code": code}}
    reply = requests.post(
        url(service, "code/execute", langchain_query(session_id)), headers=service.headers, json=body
    )
    result = reply.json()["properties"]["result"]
    assert result["type"] == "image" and result["format"] == "png"
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG")


def test_autogen_executor(service, session_id):
    query = f"api-version=2024-02-02-preview&identifier={session_id}"  # not encoded
    for code in ("import os\nos.chdir('/mnt/data')", "print('from autogen')"):  # its setup, then a code block
        body = {"properties": {**ENVELOPE_BODY, "code": code}}
        reply = requests.post(url(service, "code/execute", query), headers=service.headers, json=body, timeout=60)
        reply.raise_for_status()
        status = reply.json()["properties"]["status"]
        assert "Success" in status and "Failure" not in status
    assert reply.json()["properties"]["stdout"] == "from autogen\n"
    failed = requests.post(
        url(service, "code/execute", query),
        headers=service.headers,
        json={"properties": {**ENVELOPE_BODY, "code": "1/0"}},
        timeout=60,
    ).json()["properties"]
    assert "Failure" in failed["status"] and "ZeroDivisionError" in failed["stderr"]
    form = {"file": ("notes.txt", b"autogen file", "application/octet-stream")}
    assert requests.post(url(service, "files/upload", query), headers=service.headers, files=form).ok
    content = requests.get(url(service, "files/content/notes.txt", query), headers=service.headers)
    assert content.content == b"autogen file"
    listed = requests.get(url(service, "files", query), headers=service.headers).json()["value"]
    assert any(item["properties"]["filename"] == "notes.txt" for item in listed)


def test_semantic_kernel_python(service, session_id):
    query = f"api-version=2024-02-02-preview&identifier={session_id}"
    body = {"properties": {**ENVELOPE_BODY, "code": "print(6 * 7)", "timeoutInSeconds": 100}}
    reply = requests.post(url(service, "code/execute", query), headers=service.headers, json=body, timeout=60)
    assert reply.json()["properties"]["stdout"] == "42\n"
    form = {"file": ("/mnt/data/sk.txt", b"sk", "application/octet-stream")}  # the full path as the filename
    assert requests.post(url(service, "files/upload", query), headers=service.headers, files=form).ok
    listed = requests.get(url(service, "files", query), headers=service.headers).json()["value"]
    full_paths = [f"/mnt/data/{item['properties']['filename']}" for item in listed]
    assert "/mnt/data/sk.txt" in full_paths
    assert requests.get(url(service, "files/content/sk.txt", query), headers=service.headers).content == b"sk"


def test_semantic_kernel_dotnet(service, session_id):
    query = f"api-version=2024-10-02-preview&identifier={session_id}"
    body = {"codeInputType": "Inline", "executionType": "Synchronous", "code": "print('net')", "timeoutInSeconds": 100}
    reply = requests.post(url(service, "executions", query), headers=service.headers, json=body, timeout=60)
    assert reply.status_code in (200, 202)
    assert reply.json()["status"] == "Succeeded" and reply.json()["result"]["stdout"] == "net\n"
    form = {"file": ("my file.txt", b"dotnet", "application/octet-stream")}
    assert requests.post(url(service, "files", query), headers=service.headers, files=form).ok
    escaped = quote("my file.txt", safe="")  # Uri.EscapeDataString
    content = requests.get(url(service, f"files/{escaped}/content", query), headers=service.headers)
    assert content.content == b"dotnet"
    entry = next(v for v in requests.get(url(service, "files", query), headers=service.headers).json()["value"]
                 if v["name"] == "my file.txt")  # fmt: skip
    assert {"name", "sizeInBytes", "lastModifiedAt", "contentType", "type"} <= set(entry)


def test_llamaindex_code_interpreter(service, session_id):
    query = langchain_query(session_id)
    body = {"properties": {**ENVELOPE_BODY, "code": "x = 2\nx ** 10"}}
    reply = requests.post(url(service, "code/execute", query), headers=service.headers, json=body, timeout=60)
    assert reply.json()["properties"]["result"] == 1024
    form = {"file": ("/mnt/data/llama.txt", b"llama", "application/octet-stream")}
    uploaded = requests.post(url(service, "files/upload", query), headers=service.headers, files=form)
    assert [(v["properties"]["filename"], v["properties"]["size"]) for v in uploaded.json()["value"]] == [
        ("llama.txt", 5)
    ]
    assert requests.get(url(service, "files/content/llama.txt", query), headers=service.headers).content == b"llama"


def test_langchain_js(service, session_id):
    query = f"identifier={quote(session_id, safe='')}&api-version=2024-02-02-preview"  # encodeURIComponent
    body = {"properties": {**ENVELOPE_BODY, "code": "'js' * 2"}}
    reply = requests.post(url(service, "code/execute", query), headers=service.headers, json=body, timeout=60)
    assert reply.json()["properties"]["result"] == "jsjs"
