"""Issue 6 item 4: hostile file names and payloads through the client, the raw HTTP API and the UI upload handler.

Every name gets a clear error or a safe result (the file lands inside the session's directory under exactly that
name), and nothing outside the session directory is read or written: canary files next to it and elsewhere keep
their content, never appear in a reply, and no new file appears outside the session directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient
from azure_sessions.errors import InvalidFileNameError, SessionsError
from tests.reliability.support import multipart, new_identifier, raw_request, tree_state

TOKEN = "hostile-token"
SECRET = "CANARY-7f3a9c-must-never-be-read"
V = "api-version=2024-10-02-preview"


class Canaries:
    """Files outside the session directory that must stay unread and unchanged."""

    def __init__(self, emu: Any, elsewhere: Path) -> None:
        self.emu = emu
        self.root = Path(emu.data_root)
        self.elsewhere = elsewhere
        self.paths = [
            self.root / "sessions" / "canary.txt",  # one level above every session directory
            self.root / "canary.txt",  # two levels above
            elsewhere / "canary.txt",  # an unrelated absolute path
        ]
        for path in self.paths:
            path.write_text(SECRET)
        self.before = self.outside()

    def outside(self) -> dict:
        """Everything under the data root except each session's directories (its /mnt/data and its scratch
        directory), the logs and staging, plus the unrelated directory."""
        own = (self.root / "sessions", self.root / "scratch")

        def skip(path: Path) -> bool:
            return (path.parent in own and path.is_dir()) or path.name in ("logs", "staging")

        return {"root": tree_state(self.root, skip), "elsewhere": tree_state(self.elsewhere)}

    def check(self) -> None:
        assert self.outside() == self.before
        for path in self.paths:
            assert path.read_text() == SECRET
        staging = self.root / "staging"
        assert not staging.exists() or list(staging.iterdir()) == []  # no staged upload left behind


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from tests.reliability.conftest import checked_emulator

    with checked_emulator(token=TOKEN, prestart=0) as emu:  # no background refill: every new directory is ours
        assert emu.wait_for_template()  # what the template writes in its own home comes before the snapshot
        canaries = Canaries(emu, tmp_path_factory.mktemp("elsewhere"))
        client = SessionsClient(emu.endpoint, new_identifier(), TOKEN)
        client.execute("1")
        yield SimpleNamespace(emu=emu, canaries=canaries, client=client, home=emu.session(client.identifier).data_dir)
        client.close()
        canaries.check()


@pytest.fixture(autouse=True)
def canaries_intact(hostile) -> Iterator[None]:
    yield
    hostile.canaries.check()


def never_leaks(*blobs: Any) -> None:
    for blob in blobs:
        text = blob if isinstance(blob, str) else repr(blob)
        assert SECRET not in text and "root:x:0:0" not in text


# ---------------------------------------------------------------------------------------------------------------
# Through the client
# ---------------------------------------------------------------------------------------------------------------
REFUSED_BY_CLIENT = [
    "../canary.txt",
    "../../canary.txt",
    "a/../../canary.txt",
    "/etc/passwd",
    "/mnt/data/../canary.txt",
    "/mnt/data/../../etc/passwd",
    "/mnt/data",
    "",
    ".",
    "..",
    "a//b",
    "trailing/",
    "bad\x00name",
    "line\nbreak",
    "tab\tname",
    "x" * 256,
    "é" * 128,  # 256 UTF-8 bytes in one segment
    "d/" * 520 + "x",  # longer than 1024 bytes in total
    "lone\udc80surrogate",
]
SAFE_NAMES = [
    "／etc／passwd",  # fullwidth solidus: one ordinary name, not a path
    "..%2fcanary.txt",  # percent signs are quoted, never decoded into a path
    "%2e%2e%2fcanary.txt",
    "..%252fcanary.txt",
    "what?.txt",
    "hash#tag.txt",
    "100%.txt",
    ".bashrc",
    ".hidden/.inner",
    "x" * 255,
    "é" * 127,
    "\u202eevil.txt",  # right-to-left override
    "．．/canary.txt",  # fullwidth full stops: a directory with an odd name, inside /mnt/data
    "\u2024\u2024/canary.txt",  # one-dot leaders
    "~/canary.txt",
    "$HOME",
    " ",
    "con",
    "a/b/c/deep.txt",
    "/mnt/data/prefixed.txt",
]


@pytest.mark.parametrize("name", REFUSED_BY_CLIENT, ids=lambda n: repr(n)[:40])
def test_client_refuses_escaping_names_before_sending(hostile, name: str) -> None:
    client = hostile.client
    for call in (
        lambda: client.upload(io.BytesIO(b"evil"), name),
        lambda: client.read_bytes(name),
        lambda: client.file_info(name),
        lambda: client.delete_file(name),
    ):
        with pytest.raises(InvalidFileNameError) as caught:
            call()
        assert caught.value.status_code is None and len(str(caught.value)) > 20


@pytest.mark.parametrize("name", SAFE_NAMES, ids=lambda n: repr(n)[:40])
def test_client_odd_but_harmless_names_stay_inside_the_session(hostile, name: str) -> None:
    client, home = hostile.client, hostile.home
    data = f"content of {name!r}".encode()
    relative = name.removeprefix("/mnt/data/")
    info = client.upload(io.BytesIO(data), name)
    assert info.name == relative
    assert (home / relative).is_file() and not (home / relative).is_symlink()
    assert (home / relative).read_bytes() == data  # exactly that name, inside the session directory
    assert client.read_bytes(name) == data
    assert client.file_info(name).size == len(data)
    client.delete_file(name)
    assert not (home / relative).exists()


def test_nfc_and_nfd_names_are_two_distinct_files(hostile) -> None:
    client, home = hostile.client, hostile.home
    nfc, nfd = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")
    assert nfc != nfd
    client.upload(io.BytesIO(b"composed"), nfc)
    client.upload(io.BytesIO(b"decomposed"), nfd)
    assert client.read_bytes(nfc) == b"composed" and client.read_bytes(nfd) == b"decomposed"
    assert {p.name for p in home.iterdir()} >= {nfc, nfd}
    for name in (nfc, nfd):
        client.delete_file(name)


def test_backslash_names_are_refused_by_the_service(hostile) -> None:
    with pytest.raises(SessionsError) as caught:
        hostile.client.upload(io.BytesIO(b"evil"), "..\\..\\canary.txt")
    assert caught.value.status_code == 400 and caught.value.error_code == "InvalidFileName"


# ---------------------------------------------------------------------------------------------------------------
# A symlink (and a hard link) made inside the sandbox
# ---------------------------------------------------------------------------------------------------------------
def test_links_made_by_sandbox_code_never_lead_outside(hostile) -> None:
    emu, client, home = hostile.emu, hostile.client, hostile.home
    canary = str(hostile.canaries.paths[2])
    code = f"""
import os
made = {{}}
for target, link in [({canary!r}, 'link'), ('/etc/passwd', 'passwd-link'), ('/', 'root-link'), ('..', 'up'),
                     ({str(hostile.canaries.root)!r}, 'emulator-root')]:
    try:
        os.symlink(target, '/mnt/data/' + link); made[link] = 'made'
    except OSError as exc:
        made[link] = type(exc).__name__
try:
    os.link({canary!r}, '/mnt/data/hard'); made['hard'] = 'made'
except OSError as exc:
    made['hard'] = type(exc).__name__
made
"""
    made = client.execute(code).result
    assert "'link': 'made'" in made and "'root-link': 'made'" in made
    if emu.isolated:  # the canary is not even visible inside bubblewrap, so no hard link can reach it
        assert "'hard': 'made'" not in made
    else:
        (home / "hard").unlink(missing_ok=True)  # unisolated code can do anything; only the file API is tested
    assert {f.name for f in client.list_files()}.isdisjoint({"link", "passwd-link", "root-link", "up"})
    for name in ("link", "passwd-link", "up", "root-link/etc/passwd", "up/canary.txt", "emulator-root/canary.txt"):
        for call in (client.read_bytes, client.file_info):
            with pytest.raises(SessionsError) as caught:
                call(name)
            assert caught.value.status_code == 409 and "is a link: links are not followed" in str(caught.value)
            never_leaks(str(caught.value))
    for name in ("root-link/evil.txt", "up/evil.txt", "emulator-root/evil.txt"):
        with pytest.raises(SessionsError) as caught:
            client.upload(io.BytesIO(b"evil"), name)
        assert caught.value.status_code == 409 and caught.value.error_code == "LinkNotFollowed"
    assert not Path("/evil.txt").exists()
    client.upload(io.BytesIO(b"replaced"), "link")  # uploading over a link replaces the link, not its target
    assert (home / "link").is_file() and not (home / "link").is_symlink()
    for name in ("link", "passwd-link", "root-link", "up", "emulator-root"):
        client.delete_file(name)  # deletes the link itself
    assert Path("/etc/passwd").exists()


# ---------------------------------------------------------------------------------------------------------------
# Raw HTTP: hand-built URLs and multipart bodies (http.client sends the path unnormalized)
# ---------------------------------------------------------------------------------------------------------------
def ident_query(identifier: str) -> str:
    return f"{V}&identifier={identifier}"


RAW_GETS = [
    "files/../../canary.txt/content",
    "files/..%2f..%2fcanary.txt/content",
    "files/%2e%2e/%2e%2e/canary.txt/content",
    "files/%2e%2e%2f%2e%2e%2fcanary.txt",
    "files/%2Fetc%2Fpasswd/content",
    "files//etc/passwd/content",
    "files/%00/content",
    "files/a%00b/content",
    "files/..%5c..%5ccanary.txt/content",
    "files/mnt/data/../../canary.txt/content",
    "files/%2fmnt%2fdata%2f..%2f..%2fcanary.txt/content",
]


@pytest.mark.parametrize("path", RAW_GETS)
def test_raw_traversal_urls_get_a_clear_error(hostile, path: str) -> None:
    status, body, headers = raw_request(
        hostile.emu.endpoint, "GET", f"{path}?{ident_query(hostile.client.identifier)}", TOKEN
    )
    never_leaks(body)
    assert status in (400, 404), (status, body)
    error = json.loads(body)["error"]
    assert error["code"] and len(error["message"]) > 20 and headers["x-ms-error-code"] == error["code"]


def test_raw_envelope_dialect_and_double_encoding(hostile) -> None:
    ident = f"identifier={hostile.client.identifier}"
    for path in (
        f"files/content/..%2f..%2fcanary.txt?api-version=2024-02-02-preview&{ident}",
        f"files/content/%2Fetc%2Fpasswd?api-version=2024-08-02-preview&{ident}",
        f"files/%252e%252e%252fcanary.txt/content?{V}&{ident}",  # decoded once: a literal, missing name
    ):
        status, body, _ = raw_request(hostile.emu.endpoint, "GET", path, TOKEN)
        never_leaks(body)
        assert status in (400, 404) and json.loads(body)["error"]["code"]


@pytest.mark.parametrize(
    "query", ["path=../..", "path=/etc", "path=/mnt/data/../..", "path=%2e%2e", "path=a/../../.."]
)
def test_raw_directory_parameter_cannot_leave(hostile, query: str) -> None:
    ident = ident_query(hostile.client.identifier)
    status, body, _ = raw_request(hostile.emu.endpoint, "GET", f"files?{ident}&{query}", TOKEN)
    assert status == 400 and json.loads(body)["error"]["code"] == "InvalidFileName"
    upload, ctype = multipart(b"canary.txt", b"overwritten")
    status, body, _ = raw_request(
        hostile.emu.endpoint, "POST", f"files?{ident}&{query}", TOKEN, upload, {"Content-Type": ctype}
    )
    assert status == 400 and json.loads(body)["error"]["code"] == "InvalidFileName"


MULTIPART_NAMES = [
    b"../../canary.txt",
    b"../canary.txt",
    b"/etc/cron.d/evil",
    b"/mnt/data/../../canary.txt",
    b"bad\x00name",
    b"..\\..\\canary.txt",
    b"",
    b"a/../../canary.txt",
]


@pytest.mark.parametrize("filename", MULTIPART_NAMES, ids=lambda n: repr(n)[:30])
@pytest.mark.parametrize("route", ["files?" + V, "files/upload?api-version=2024-02-02-preview"])
def test_raw_multipart_names_that_escape_are_refused(hostile, filename: bytes, route: str) -> None:
    body, ctype = multipart(filename, b"overwritten by an attacker")
    path = f"{route}&identifier={hostile.client.identifier}"
    status, reply, _ = raw_request(hostile.emu.endpoint, "POST", path, TOKEN, body, {"Content-Type": ctype})
    assert status == 400, reply
    assert json.loads(reply)["error"]["code"] in ("InvalidFileName", "InvalidRequestBody")
    assert not Path("/etc/cron.d/evil").exists()


def test_raw_multipart_odd_encodings_are_stored_inside(hostile) -> None:
    ident = ident_query(hostile.client.identifier)
    cases = {
        b"\xff\xfe.bin": "ÿþ.bin",  # not UTF-8: read as Latin-1, one harmless name
        "／etc／passwd".encode(): "／etc／passwd",
    }
    for raw_name, stored in cases.items():
        body, ctype = multipart(raw_name, b"odd")
        status, reply, _ = raw_request(
            hostile.emu.endpoint, "POST", f"files?{ident}", TOKEN, body, {"Content-Type": ctype}
        )
        assert status == 200, reply
        assert (hostile.home / stored).read_bytes() == b"odd"
        hostile.client.delete_file(stored)
    # RFC 5987 filename*= is not honoured: without a plain filename there is no file part
    body, ctype = multipart(b"x", b"odd")
    body = body.replace(b'filename="x"', b"filename*=UTF-8''..%2F..%2Fcanary.txt")
    status, reply, _ = raw_request(
        hostile.emu.endpoint, "POST", f"files?{ident}", TOKEN, body, {"Content-Type": ctype}
    )
    assert status == 400


def test_identifiers_that_look_like_paths_get_their_own_directory(hostile) -> None:
    emu = hostile.emu
    for identifier in ("../../etc", "../..", "/etc/passwd", "a/../../b"):  # ".." alone is too short: refused
        client = SessionsClient(emu.endpoint, identifier, TOKEN)
        client.upload(io.BytesIO(b"mine"), "mine.txt")
        home = emu.session(identifier).data_dir
        assert home.parent == Path(emu.data_root) / "sessions" and (home / "mine.txt").read_bytes() == b"mine"
        client.delete_session()
        client.close()


# ---------------------------------------------------------------------------------------------------------------
# Payloads: bytes that are not UTF-8, huge output, binary files, unserializable answers
# ---------------------------------------------------------------------------------------------------------------
def test_non_utf8_and_huge_output_do_not_break_the_session(hostile) -> None:
    client = hostile.client
    result = client.execute(
        "import os, sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80 bad bytes\\n'); sys.stdout.flush()\n"
        "os.write(1, b'\\xc3\\x28 half a char\\n'); os.write(2, b'\\xff err\\n')\n'\\udc80 lone surrogate'"
    )
    assert result.succeeded and "bad bytes" in result.stdout and "half a char" in result.stdout
    assert "\ufffd" in result.stdout and "err" in result.stderr
    big = client.execute("print('x' * 30_000_000)\nprint('y' * 100, flush=True)")
    assert big.succeeded and 100_000 < len(big.stdout) < 4_000_000 and "truncated" in big.stdout
    many = client.execute("for i in range(200_000):\n    print(i)")
    assert many.succeeded and len(many.stdout) < 4_000_000
    value = client.execute("'z' * 5_000_000")
    assert value.succeeded and len(value.result) < 2_000_000
    broken = client.execute("class B:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nB()")
    assert broken.succeeded and "unrepresentable" in broken.result
    weird_code = client.execute("x = 'nul\\x00 inside'\nlen(x)  # \x00 \udc80")
    assert weird_code.status in ("Succeeded", "Failed")
    assert client.execute("6 * 7").result == 42  # the session is still healthy


def test_binary_files_round_trip_byte_for_byte(hostile) -> None:
    client = hostile.client
    data = bytes(range(256)) * 4096 + b"\x00" * 1000 + os.urandom(100_000)
    client.upload(io.BytesIO(data), "blob.bin")
    assert client.read_bytes("blob.bin") == data
    digest = client.execute("import hashlib\nhashlib.sha256(open('/mnt/data/blob.bin','rb').read()).hexdigest()")
    assert digest.result == hashlib.sha256(data).hexdigest()
    client.delete_file("blob.bin")


@pytest.mark.parametrize(
    "expression",
    ["lambda: 1", "open('/mnt/data/handle.txt', 'w')", "(i for i in range(3))", "__import__('socket').socket()"],
)
def test_an_unserializable_final_answer_is_an_ordinary_error(hostile, expression: str) -> None:
    from smolagents import CodeAgent

    from tests.support.scripted_model import ScriptedModel, code_reply

    executor = AzureDynamicSessionsExecutor(client=SessionsClient(hostile.emu.endpoint, new_identifier(), TOKEN))
    model = ScriptedModel([code_reply(f"final_answer({expression})"), code_reply("final_answer('plain text')")])
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=3, verbosity_level=0)
    try:
        assert agent.run("answer with an object") == "plain text"
    finally:
        executor.cleanup()
    error = str(agent.memory.steps[1].error)
    assert "SerializationError" in error and "Cannot safely serialize" in error
    assert "cut off" not in error  # not mistaken for a truncated answer


# ---------------------------------------------------------------------------------------------------------------
# The UI upload handler
# ---------------------------------------------------------------------------------------------------------------
UI_NAMES = [
    ".bashrc",
    "a?b#c%d.txt",
    "..%2fcanary.txt",
    "／etc／passwd",
    unicodedata.normalize("NFC", "résumé.txt"),
    unicodedata.normalize("NFD", "résumé.txt"),
    "x" * 251 + ".txt",
    "\u202eevil.txt",
    " leading space.txt",
    "line\nbreak.txt",  # legal on Linux, refused by the client
    "tab\there.txt",
]


def test_ui_upload_handler_with_hostile_names(hostile, tmp_path: Path) -> None:
    from playground.backend import Backend
    from playground.handlers import Handlers
    from playground.model_catalog import ModelCatalog
    from playground.settings import Settings

    settings = Settings(max_upload_bytes=10_000)
    backend = Backend.for_emulator(hostile.emu, TOKEN)
    handlers = Handlers(settings, backend, ModelCatalog.from_settings(settings, {}))
    request = SimpleNamespace(session_hash="hostile-tab")
    paths = []
    for index, name in enumerate(UI_NAMES):
        directory = tmp_path / f"u{index}"
        directory.mkdir()
        (directory / name).write_bytes(name.encode("utf-8", "surrogateescape"))
        paths.append(str(directory / name))
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.bin").write_bytes(b"0" * 20_000)
    paths.append(str(tmp_path / "big" / "big.bin"))
    try:
        key = handlers.registry.attach("hostile-tab", None).key
        update = handlers.upload(paths, key, request)
        table, message = update["files"], update["status"]
        session = handlers.registry.session("hostile-tab", key)
        home = hostile.emu.session(session.session_id).data_dir
        stored = {p.name for p in home.iterdir()}
        listed = set(table["Name"])
        for name in UI_NAMES:
            if "\n" in name or "\t" in name:
                assert name not in stored and "refused" in message
            else:
                assert name in stored and name in listed and (home / name).read_bytes() == name.encode()
        assert "big.bin" not in stored and "too large" in message
        assert "Traceback" not in message
    finally:
        handlers.registry.close_all()
