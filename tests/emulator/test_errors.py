"""Azure error bodies: auth, versions, identifiers, bodies, file names, upload size, unknown routes."""

from __future__ import annotations

import os
import threading

import pytest
import requests

from tests.emulator.conftest import new_id

MIB = 1024 * 1024


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) - {"target"} == {"code", "message"}
    assert response.headers["x-ms-error-code"] == body["error"]["code"]
    if code:
        assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def shared_id() -> str:
    return new_id()


def test_missing_and_wrong_bearer_are_401(api, shared_id):
    url = f"{api.endpoint}/executions?api-version=2024-10-02-preview&identifier={shared_id}"
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer nope"},
    ):
        response = requests.post(url, json={"code": "1"}, headers=headers, timeout=10)
        error = assert_error(response, 401, "Unauthorized")
        assert "nope" not in error["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{api.endpoint}/.emulator/faults", timeout=10).status_code == 401
    interrupt = f"{api.endpoint}/.emulator/interrupt?api-version=2024-10-02-preview&identifier={shared_id}"
    assert requests.post(interrupt, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401


def test_any_bearer_is_accepted_without_a_token(unisolated_api):
    response = requests.post(
        f"{unisolated_api.endpoint}/executions?api-version=2024-10-02-preview&identifier=abcd",
        json={"code": "1"},
        headers={"Authorization": "Bearer whatever"},
        timeout=30,
    )
    assert response.status_code == 401  # this instance has a token ...
    from azure_sessions.emulator import start_emulator

    with start_emulator(prestart=0, sandbox="none") as emu:  # ... this one has none
        assert emu.token is None
        url = f"{emu.endpoint}/files?api-version=2024-10-02-preview&identifier=abcd"
        assert requests.get(url, headers={"Authorization": "Bearer whatever"}, timeout=30).status_code == 200
        assert requests.get(url, timeout=30).status_code == 401


def test_non_loopback_without_token_is_refused():
    from azure_sessions.emulator import start_emulator

    with pytest.raises(ValueError, match="non-loopback"):
        start_emulator(host="0.0.0.0", prestart=0)


@pytest.mark.parametrize("version", [None, "", "2023-01-01", "2024-10-02"])
def test_unknown_api_version_lists_supported(api, shared_id, version):
    params = {} if version is None else {"api-version": version}
    response = api.request("POST", "executions", shared_id, None, params=params, json={"code": "1"})
    error = assert_error(response, 400)
    assert "2024-10-02-preview" in error["message"] and "2025-10-02-preview" in error["message"]


def test_identifier_errors(api):
    assert_error(api.request("POST", "executions", None, json={"code": "1"}), 400, "MissingIdentifier")
    error = assert_error(api.request("POST", "executions", "bad id", json={"code": "1"}), 400, "InvalidIdentifier")
    assert error["target"] == "identifier" and "' '" in error["message"]
    error = assert_error(api.request("GET", "files", "x" * 300), 400, "InvalidIdentifier")
    assert "300 characters; it must have 4 to 128" in error["message"]


def test_bad_bodies(api, shared_id):
    assert_error(api.request("POST", "executions", shared_id, data=b"{not json"), 400, "InvalidRequestBody")
    assert_error(api.request("POST", "executions", shared_id, json={"codeInputType": "inline"}), 400)
    assert_error(api.request("POST", "code/execute", shared_id, "2024-02-02-preview", json={"properties": {}}), 400)


def test_unknown_routes_and_ids(api, shared_id):
    assert_error(api.request("GET", "nothing-here", shared_id), 404, "NotFound")
    assert_error(api.request("GET", "executions/does-not-exist", shared_id), 404)
    assert_error(api.request("PUT", "executions", shared_id), 405)
    assert_error(api.request("GET", "session", new_id(), "2025-02-02-preview"), 404, "SessionNotFound")
    assert_error(api.request("DELETE", "session", new_id(), "2025-02-02-preview"), 404, "SessionNotFound")


@pytest.mark.parametrize(
    "name",
    ["../escape.txt", "/etc/passwd", "a/../../b", "..", "/mnt/data/../../etc/x", "bad\\name", "x" * 300],
)
def test_hostile_upload_names_are_refused(api, shared_id, name):
    assert_error(api.upload(shared_id, name, b"x"), 400, "InvalidFileName")


def test_nul_in_multipart_filename_is_refused(api, shared_id):
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00b"\r\n\r\nx\r\n--b--\r\n'
    response = api.request(
        "POST", "files", shared_id, data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(response, 400, "InvalidFileName")


@pytest.mark.parametrize(
    "path", ["files/..%2F..%2Fetc%2Fpasswd/content", "files/%2Fetc%2Fpasswd", "files/a%00b/content"]
)
def test_hostile_names_in_urls_are_refused(api, shared_id, path):
    assert api.request("GET", path, shared_id).status_code in (400, 404)
    assert b"root:" not in api.request("GET", path, shared_id).content


def test_symlink_planted_by_code_is_not_followed(api, shared_id):
    api.run(shared_id, "import os; os.symlink('/etc/passwd', '/mnt/data/pw'); os.symlink('/etc', '/mnt/data/etc')")
    error = assert_error(api.request("GET", "files/pw/content", shared_id), 409, "LinkNotFollowed")
    assert error["message"].startswith("'pw' is a link: links are not followed.")
    error = assert_error(api.request("GET", "files/etc/passwd/content", shared_id), 409, "LinkNotFollowed")
    assert error["message"].startswith("'etc' is a link: links are not followed.")
    assert_error(api.request("GET", "files/pw", shared_id), 409, "LinkNotFollowed")
    assert_error(api.upload(shared_id, "etc/evil.txt", b"x"), 409, "LinkNotFollowed")
    names = [v["name"] for v in api.request("GET", "files", shared_id).json()["value"]]
    assert "pw" not in names and "etc" not in names


def test_fifo_and_socket_planted_by_code_are_refused_as_not_regular_files(api, shared_id):
    made = api.run(
        shared_id,
        # relative names: the working directory is /mnt/data in every tier (mkfifo and bind are not path-mapped)
        "import os, socket\nos.mkfifo('pipe')\ns = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.bind('sock'); made = 'socket'\nexcept OSError as exc:\n    made = repr(exc)\nmade",
    )["executionResult"]
    error = assert_error(api.request("GET", "files/pipe/content", shared_id), 409, "NotARegularFile")
    assert error["message"].startswith("'pipe' is not a regular file: it is a FIFO")
    assert_error(api.request("GET", "files/pipe", shared_id), 409, "NotARegularFile")
    if made == "socket":  # the Landlock tier refuses every socket(), so no socket file can be made there
        error = assert_error(api.request("GET", "files/sock/content", shared_id), 409, "NotARegularFile")
        assert error["message"].startswith("'sock' is not a regular file: it is a socket")
    folder = api.upload(shared_id, "folder/inside.txt", b"x")
    assert folder.status_code == 200
    error = assert_error(api.request("GET", "files/folder/content", shared_id), 409, "NotARegularFile")
    assert "it is a directory" in error["message"]
    api.run(shared_id, "import os\nfor n in ('pipe', 'sock'):\n    os.path.lexists(n) and os.unlink(n)")


def test_upload_without_multipart_is_400(api, shared_id):
    assert_error(api.request("POST", "files", shared_id, data=b"raw"), 400, "InvalidRequestBody")
    only_field = {"notfile": (None, "value")}
    assert_error(api.request("POST", "files", shared_id, files=only_field), 400, "InvalidRequestBody")


def _multipart_stream(total: int, chunk: bytes):
    yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    yield b"Content-Type: application/octet-stream\r\n\r\n"
    sent = 0
    while sent < total:
        piece = chunk if total - sent >= len(chunk) else chunk[: total - sent]
        sent += len(piece)
        yield piece
    yield b"\r\n--bnd--\r\n"


class RssPeak:
    """Samples this process's resident size (the emulator runs in-process) while a block runs."""

    def __init__(self) -> None:
        self.peak = self.start = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to sample memory")
def test_upload_over_128_mib_is_413_and_memory_stays_flat(api, shared_id):
    with RssPeak() as memory:
        response = api.request(
            "POST",
            "files",
            shared_id,
            data=_multipart_stream(128 * MIB + 1, b"\0" * MIB),
            headers={"Content-Type": "multipart/form-data; boundary=bnd"},
            timeout=120,
        )
    assert_error(response, 413, "PayloadTooLarge")
    grown = (memory.peak - memory.start) / MIB
    assert grown < 48, f"the process grew by {grown:.0f} MiB while streaming 128 MiB"
    assert "big.bin" not in [v["name"] for v in api.request("GET", "files", shared_id).json()["value"]]


def test_upload_of_exactly_128_mib_is_accepted(api, shared_id):
    response = api.request(
        "POST",
        "files",
        shared_id,
        data=_multipart_stream(128 * MIB, b"\1" * MIB),
        headers={"Content-Type": "multipart/form-data; boundary=bnd"},
        timeout=120,
    )
    assert response.status_code == 200 and response.json()["sizeInBytes"] == 128 * MIB
    with api.request("GET", "files/big.bin/content", shared_id, stream=True) as download:
        assert int(download.headers["content-length"]) == 128 * MIB
        assert sum(len(piece) for piece in download.iter_content(MIB)) == 128 * MIB
    assert api.request("DELETE", "files/big.bin", shared_id).status_code == 204
