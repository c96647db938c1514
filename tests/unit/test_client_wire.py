"""SessionsClient against recorded replies served over real HTTP on loopback."""

from __future__ import annotations

import io
import os

import pytest

from azure_sessions import MAX_UPLOAD_BYTES
from azure_sessions.errors import (
    ClientAuthenticationError,
    FileTooLargeError,
    InvalidFileNameError,
    NotARegularFileError,
    NotFoundError,
    PermissionDeniedError,
    PoolFullError,
    ServiceError,
    ServiceResponseError,
    SessionsError,
)
from azure_sessions.names import normalize_name
from tests.unit import recordings as rec
from tests.unit.conftest import TOKEN
from tests.unit.wire_server import Received, Reply


def multipart_file(request: Received) -> tuple[str, bytes]:
    """(filename, content) of the single 'file' part of a multipart request."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    part = request.body.split(b"--" + boundary)[1]
    head, _, content = part.partition(b"\r\n\r\n")
    assert b'name="file"' in head
    filename = head.split(b'filename="')[1].split(b'"')[0].decode()
    assert content.endswith(b"\r\n")
    return filename, content[:-2]


def test_execute_2410_recorded_202(server, make_client):
    server.reply(202, rec.EXECUTE_2410, headers=rec.EXECUTE_2410_HEADERS)
    client = make_client()
    result = client.execute('print("Hello world")', timeout=60)
    assert result.succeeded and result.stdout == "Hello world\n" and result.result is None
    assert result.session_guid == rec.SESSION_GUID
    (req,) = server.requests
    assert (req.method, req.path) == ("POST", "executions")
    assert req.query == {"api-version": "2024-10-02-preview", "identifier": "session-1"}
    assert req.json == {
        "codeInputType": "inline",
        "executionType": "synchronous",
        "code": 'print("Hello world")',
        "timeoutInSeconds": 60,
    }
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("azure-sessions-python/")


@pytest.mark.parametrize("version", ["2025-02-02-preview", "2025-10-02-preview"])
def test_execute_2025_returns_200(server, make_client, version):
    server.reply(200, rec.resource_execution(stdout="63\n", value=7))
    result = make_client(version).execute("print(7*9)\n7")
    assert (result.stdout, result.result) == ("63\n", 7)
    assert server.requests[0].query["api-version"] == version


@pytest.mark.parametrize("version", ["2024-02-02-preview", "2024-08-02-preview"])
def test_execute_envelope(server, make_client, version):
    server.reply(200, rec.EXECUTE_2402)
    result = make_client(version).execute("6 * 7", timeout=300)
    assert (result.status, result.result, result.stdout) == ("Succeeded", 42, "hello world\n")
    req = server.requests[0]
    assert req.path == "code/execute"
    assert req.json["properties"]["code"] == "6 * 7"
    assert req.json["properties"]["timeoutInSeconds"] == 220


def test_execute_failure_is_data_not_an_exception(server, make_client):
    server.reply(200, rec.EXECUTE_2402_FAILURE)
    result = make_client("2024-02-02-preview").execute("1/0")
    assert result.status == "Failed" and "ZeroDivisionError" in result.stderr


def test_execute_image(server, make_client):
    png = rec.tiny_png()
    server.reply(202, rec.resource_execution(value=rec.image_value(png)))
    result = make_client().execute("plt.show()")
    assert result.images[0].data == png and result.result is None


def test_execute_polls_a_running_execution(server, make_client, sleeps):
    server.reply(202, {"id": "e1", "status": "Running"}, headers={"x-ms-session-guid": "g"})
    server.reply(200, {"id": "e1", "status": "Running"})
    server.reply(200, rec.resource_execution(stdout="done\n", exec_id="e1"))
    result = make_client().execute("slow()")
    assert result.stdout == "done\n" and result.session_guid == "g"
    assert [r.path for r in server.requests] == ["executions", "executions/e1", "executions/e1"]


def test_upload_resource_dialect_streams_multipart(server, make_client, tmp_path):
    server.reply(200, rec.UPLOAD_2410)
    path = tmp_path / "cert.txt"
    path.write_bytes(b"cert!!\n")
    info = make_client().upload(path)
    assert (info.name, info.size) == ("cert.txt", 7)
    req = server.requests[0]
    assert (req.method, req.path) == ("POST", "files")
    assert req.headers["content-length"] == str(len(req.body))
    assert multipart_file(req) == ("cert.txt", b"cert!!\n")


def test_upload_envelope_from_file_object_with_mnt_prefix(server, make_client):
    server.reply(200, rec.UPLOAD_2402)
    info = make_client("2024-02-02-preview").upload(io.BytesIO(b"0123456789abcdef"), "/mnt/data/test1.txt")
    assert (info.name, info.size) == ("test1.txt", 16)
    req = server.requests[0]
    assert req.path == "files/upload"
    assert multipart_file(req) == ("test1.txt", b"0123456789abcdef")


def test_upload_unsized_stream_is_chunked(server, make_client):
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.chunks = [b"abc", b"def"]

        def readable(self):
            return True

        def readinto(self, buffer):
            if not self.chunks:
                return 0
            chunk = self.chunks.pop(0)
            buffer[: len(chunk)] = chunk
            return len(chunk)

    server.reply(200, {"name": "p.bin", "sizeInBytes": 6})
    make_client().upload(io.BufferedReader(Pipe()), "p.bin")
    req = server.requests[0]
    assert req.headers.get("transfer-encoding") == "chunked"
    assert multipart_file(req) == ("p.bin", b"abcdef")


def test_upload_over_128_mib_is_refused_before_sending(server, make_client, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no disk or memory used
    client = make_client()
    with pytest.raises(FileTooLargeError, match="128 MiB"):
        client.upload(big)
    with open(big, "rb") as fh, pytest.raises(FileTooLargeError):
        client.upload(fh, "big.bin")
    assert server.requests == []


def test_upload_413_maps_to_file_too_large(server, make_client):
    server.reply(413, {"error": {"code": "PayloadTooLarge", "message": "too big"}})
    with pytest.raises(FileTooLargeError) as info:
        make_client().upload(io.BytesIO(b"x"), "x.bin")
    assert info.value.status_code == 413 and info.value.error_code == "PayloadTooLarge"


@pytest.mark.parametrize(
    ("version", "path"), [("2024-10-02-preview", "files/{}/content"), ("2024-02-02-preview", "files/content/{}")]
)
def test_binary_and_unicode_download_round_trip(server, make_client, tmp_path, version, path):
    payload = bytes(range(256)) * 1000 + "ünïcödé ✓".encode()
    server.queue(Reply(200, body=payload, headers={"Content-Type": "application/octet-stream"}))
    server.queue(Reply(200, body=payload))
    server.queue(Reply(200, body=payload))
    client = make_client(version)
    dest = tmp_path / "out.bin"
    assert client.download("/mnt/data/dätä 1.bin", dest) == len(payload)
    assert dest.read_bytes() == payload
    buffer = io.BytesIO()
    assert client.download("dätä 1.bin", buffer) == len(payload)
    assert buffer.getvalue() == payload
    assert client.read_bytes("dätä 1.bin") == payload
    assert server.requests[0].path == path.format("d%C3%A4t%C3%A4%201.bin")
    assert server.requests[0].unquoted_path == path.format("dätä 1.bin")


def test_truncated_download_is_an_error_and_leaves_no_file(server, make_client, tmp_path):
    server.queue(Reply(200, body=b"abc", declared_length=10))
    server.queue(Reply(404, json={"error": {"code": "FileNotFound", "message": "no file"}}))
    client = make_client()
    with pytest.raises(ServiceResponseError):
        client.download("short.bin", tmp_path / "short.bin")
    with pytest.raises(NotFoundError) as info:
        client.download("missing.bin", tmp_path / "missing.bin")
    assert "missing.bin" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_list_info_delete_resource(server, make_client):
    server.reply(200, rec.LIST_2410)
    server.reply(200, rec.FILE_INFO_2410)
    server.queue(Reply(204))
    client = make_client()
    assert [f.name for f in client.list_files()] == ["cert.txt"]
    info = client.file_info("cert.txt")
    assert (info.name, info.size, info.type) == ("cert.txt", 7, "file")
    client.delete_file("/mnt/data/cert.txt")
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "files"),
        ("GET", "files/cert.txt"),
        ("DELETE", "files/cert.txt"),
    ]


def test_file_info_envelope_uses_the_list(server, make_client):
    server.reply(200, rec.LIST_2402)
    server.reply(200, rec.LIST_2402)
    client = make_client("2024-02-02-preview")
    assert client.file_info("test2.txt").size == 17
    with pytest.raises(NotFoundError):
        client.file_info("nope.txt")


def test_bad_names_send_nothing(server, make_client, tmp_path):
    client = make_client()
    (tmp_path / "f").write_bytes(b"x")
    calls = [
        lambda: client.download("../x", tmp_path / "o"),
        lambda: client.iter_download("a\x00b"),
        lambda: client.read_bytes(""),
        lambda: client.file_info("/etc/passwd"),
        lambda: client.delete_file("a/../../b"),
        lambda: client.upload(tmp_path / "f", "../f"),
        lambda: client.upload(tmp_path / "f", "x" * 300),
    ]
    for call in calls:
        with pytest.raises(InvalidFileNameError):
            call()
    assert server.requests == []
    assert not (tmp_path / "o").exists()


def test_each_file_call_checks_its_name_once(server, make_client, tmp_path, monkeypatch):
    import azure_sessions.client as client_module
    import azure_sessions.names as names_module

    checked: list[str] = []

    def counting(name: str) -> str:
        checked.append(name)
        return normalize_name(name)

    for module in (client_module, names_module):
        monkeypatch.setattr(module, "normalize_name", counting)
    server.fallback = lambda req: Reply(200, rec.FILE_INFO_2410 if req.method == "GET" else rec.UPLOAD_2410)
    (tmp_path / "cert.txt").write_bytes(b"cert!!\n")
    client = make_client()
    client.upload(tmp_path / "cert.txt")
    client.upload(tmp_path / "cert.txt", "/mnt/data/a b.txt")
    client.file_info("/mnt/data/a b.txt")
    client.delete_file("a b.txt")
    client.iter_download("a b.txt")  # checked now, sent on the first next()
    assert checked == ["cert.txt", "/mnt/data/a b.txt", "/mnt/data/a b.txt", "a b.txt", "a b.txt"]
    assert [r.path for r in server.requests][2:] == ["files/a%20b.txt", "files/a%20b.txt"]


def test_session_routes(server, make_client):
    server.reply(200, rec.SESSION_2502)
    server.queue(Reply(204))
    server.queue(Reply(404, json={"error": {"code": "SessionNotFound", "message": "gone"}}))
    client = make_client("2024-10-02-preview")
    assert client.get_session().etag == "9334cb07-aafd-45a0-90bd-448080a91f57"
    client.delete_session()
    client.delete_session()  # 404 is tolerated
    assert [(r.method, r.path, r.query["api-version"]) for r in server.requests] == [
        ("GET", "session", "2025-02-02-preview"),
        ("DELETE", "session", "2025-02-02-preview"),
        ("DELETE", "session", "2025-02-02-preview"),
    ]


def test_session_routes_envelope_and_2025(server, make_client):
    server.queue(Reply(204), Reply(204))
    make_client("2024-02-02-preview").delete_session()
    make_client("2025-10-02-preview").delete_session()
    assert [r.query["api-version"] for r in server.requests] == ["2025-02-02-preview", "2025-10-02-preview"]


def test_error_mapping_with_hints(server, make_client):
    server.reply(403, {"error": {"code": "Forbidden", "message": "no role"}})
    server.reply(404, {"error": {"code": "NotFound", "message": "pool full"}}, headers={"x-ms-error-code": "PoolFull"})
    server.reply(400, {"error": {"code": "BadRequest", "message": "bad identifier"}})
    client = make_client()
    with pytest.raises(PermissionDeniedError) as forbidden:
        client.execute("1")
    assert "Azure ContainerApps Session Executor" in str(forbidden.value) and forbidden.value.status_code == 403
    with pytest.raises(PoolFullError) as full:
        client.execute("1")
    assert full.value.error_code == "PoolFull" and full.value.status_code == 404
    assert "maximum number of concurrent sessions" in full.value.message
    with pytest.raises(ServiceError) as bad:
        client.execute("1")
    assert bad.value.error_code == "BadRequest" and "rejected by the service: bad identifier" in str(bad.value)


def test_static_token_401_is_not_retried(server, make_client):
    server.reply(401, {"error": {"code": "Unauthorized", "message": "bad token"}})
    with pytest.raises(ClientAuthenticationError, match=r"dynamicsessions\.io"):
        make_client().list_files()
    assert len(server.requests) == 1


def test_non_json_reply_is_a_clear_error(server, make_client):
    server.queue(Reply(200, body=b"<html>proxy login</html>"))
    with pytest.raises(SessionsError, match="not JSON"):
        make_client().list_files()


def test_repr_hides_the_token_and_closed_client_refuses(server, make_client):
    client = make_client(credential="very-secret-token-value")
    assert "very-secret-token-value" not in repr(client)
    assert "session-" in repr(client) and client.pool_name == "test-pool"
    with client:
        pass
    with pytest.raises(SessionsError, match="closed"):
        client.list_files()
    assert server.requests == []


def test_constructor_validation():
    from azure_sessions import SessionsClient

    with pytest.raises(ValueError, match="supported"):
        SessionsClient("http://127.0.0.1:1/p", credential="t", api_version="2024-01-01")
    with pytest.raises(ValueError, match="endpoint"):
        SessionsClient("not a url", credential="t")
    client = SessionsClient("http://127.0.0.1:1/p/", credential="t")
    assert client.endpoint == "http://127.0.0.1:1/p" and len(client.identifier) == 36
    client.close()


def test_a_full_pool_is_one_error_and_is_not_retried(server, make_client, sleeps):
    server.reply(404, None)  # an execution's 404 with nothing else said: the pool is full (or the endpoint wrong)
    server.reply(429, {"error": {"code": "TooManyRequests", "message": "Too Many Requests"}})  # no Retry-After
    labelled = {"error": {"code": "MaxConcurrentSessionsReached", "message": "the pool is full"}}
    server.reply(429, labelled, headers={"Retry-After": "1"})  # says it is full: not worth a retry either
    server.reply(404, labelled)  # any call naming a session may be refused so
    client = make_client()
    errors = []
    for call in (client.execute, client.execute, client.execute, lambda _: client.list_files()):
        with pytest.raises(PoolFullError) as caught:
            call("1")
        errors.append(caught.value)
    assert [e.status_code for e in errors] == [404, 429, 429, 404]
    assert len(server.requests) == 4 and sleeps == []
    assert "check the pool management endpoint" in errors[0].message  # a 404 could be that too
    assert "HTTP 429 without Retry-After" in errors[1].message
    for error in errors:
        assert "maxConcurrentSessions" in error.message and "Delete sessions you no longer need" in error.message


def test_a_404_that_names_something_else_is_not_a_full_pool(server, make_client):
    server.reply(404, {"error": {"code": "FileNotFound", "message": "no such file"}})
    server.reply(404, {"error": {"code": "OperationNotSupportedInApiVersion", "message": "not at this version"}})
    client = make_client()
    with pytest.raises(NotFoundError):
        client.file_info("x.txt")
    with pytest.raises(NotFoundError):
        client.execute("1")


def test_a_file_that_is_not_regular_carries_the_service_reason(server, make_client):
    reason = "'pw' is a link: links are not followed. Only regular files and directories can be read."
    server.reply(409, {"error": {"code": "LinkNotFollowed", "message": reason}})
    with pytest.raises(NotARegularFileError) as caught:
        make_client().read_bytes("pw")
    assert caught.value.message == f"download 'pw' was refused: {reason}"
    assert (caught.value.status_code, caught.value.error_code) == (409, "LinkNotFollowed")


def test_an_execution_result_carries_its_error(server, make_client):
    server.reply(200, rec.EXECUTE_2402_FAILURE)
    error = make_client("2024-02-02-preview").execute("1/0").error
    assert error is not None and (error.name, error.value) == ("ZeroDivisionError", "division by zero")
