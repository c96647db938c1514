"""Pure wire-shape tests: request builders and liberal parsing, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from azure_sessions import SUPPORTED_API_VERSIONS
from azure_sessions.dialects import (
    EnvelopeDialect,
    ResourceDialect,
    get_dialect,
    normalize_status,
    parse_execution,
    parse_file,
    parse_file_list,
    parse_session,
    parse_upload,
)
from tests.unit import recordings as rec


def test_unknown_api_version_names_supported_ones():
    with pytest.raises(ValueError) as info:
        get_dialect("2023-01-01")
    for version in SUPPORTED_API_VERSIONS:
        assert version in str(info.value)


@pytest.mark.parametrize(
    ("version", "kind"),
    [
        ("2024-02-02-preview", EnvelopeDialect),
        ("2024-08-02-preview", EnvelopeDialect),
        ("2024-10-02-preview", ResourceDialect),
        ("2025-02-02-preview", ResourceDialect),
        ("2025-10-02-preview", ResourceDialect),
    ],
)
def test_versions_map_to_dialects(version, kind):
    assert isinstance(get_dialect(version), kind)


def test_envelope_requests():
    d = get_dialect("2024-02-02-preview")
    op = d.execute("print(1)", 500)
    assert (op.method, op.path) == ("POST", "code/execute")
    assert op.body == {
        "properties": {
            "codeInputType": "inline",
            "executionType": "synchronous",
            "code": "print(1)",
            "timeoutInSeconds": 220,
        }
    }
    assert d.upload("a.txt")[0].path == "files/upload"
    assert d.download("a%20b.txt").path == "files/content/a%20b.txt"
    assert d.file_info("x") is None
    assert d.delete_session().api_version == "2025-02-02-preview"
    assert d.delete_session().path == "session"


def test_resource_requests():
    d = get_dialect("2024-10-02-preview")
    op = d.execute("x", 0.2)
    assert (op.method, op.path) == ("POST", "executions")
    assert op.body == {"codeInputType": "inline", "executionType": "synchronous", "code": "x", "timeoutInSeconds": 1}
    assert d.download("a").path == "files/a/content"
    assert d.file_info("a").path == "files/a"
    assert d.get_session().api_version == "2025-02-02-preview"
    assert get_dialect("2025-10-02-preview").get_session().api_version is None
    op, filename = d.upload("sub/dir/f.csv")
    assert op.params == (("path", "sub/dir"),) and filename == "f.csv"


def test_parse_recorded_2410_execution():
    result = parse_execution(rec.EXECUTE_2410, rec.SESSION_GUID)
    assert result.status == "Succeeded" and result.succeeded
    assert result.stdout == "Hello world\n" and result.stderr == ""
    assert result.result is None
    assert result.duration_ms == 7
    assert result.execution_id == "8148371f-18fe-4cfd-8ca8-20246d469817"
    assert result.session_guid == rec.SESSION_GUID


def test_parse_recorded_2402_execution():
    result = parse_execution(rec.EXECUTE_2402)
    assert (result.status, result.stdout, result.result, result.duration_ms) == ("Succeeded", "hello world\n", 42, 33)
    failed = parse_execution(rec.EXECUTE_2402_FAILURE)
    assert failed.status == "Failed" and not failed.succeeded
    assert "ZeroDivisionError" in failed.stderr


def test_parse_image_result_both_dialects():
    png = rec.tiny_png()
    for body in (
        rec.resource_execution(value=rec.image_value(png)),
        rec.envelope_execution(value=rec.image_value(png)),
    ):
        result = parse_execution(body)
        assert result.result is None
        assert len(result.images) == 1 and result.images[0].format == "png" and result.images[0].data == png
        assert result.images[0].to_pil().size == (2, 2)


def test_parse_is_liberal_about_casing_and_missing_fields():
    body = {"STATUS": "failed", "Result": {"StdOut": "o", "executionresult": 3}}
    result = parse_execution(body)
    assert (result.status, result.stdout, result.stderr, result.result) == ("Failed", "o", "", 3)
    assert parse_execution({}).status == "Succeeded"
    assert parse_execution({"properties": {"stderr": "Traceback (most recent call last):\n"}}).status == "Failed"
    # 2025-10 body with an error object and no stderr
    err = parse_execution({"status": "Failed", "error": {"code": "Timeout", "message": "too slow"}})
    assert err.stderr == "Timeout: too slow"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Success", "Succeeded"), ("Failure", "Failed"), ("Running", "Running"), ("0", "Succeeded"), ("2", "Failed")],
)
def test_normalize_status(raw, expected):
    assert normalize_status(raw) == expected


def test_parse_recorded_files():
    upload = parse_upload(rec.UPLOAD_2410, "cert.txt")
    assert (upload.name, upload.size, upload.type, upload.content_type) == ("cert.txt", 7, "file", None)
    assert upload.modified == datetime(2024, 11, 11, 9, 5, 2, 486529, tzinfo=UTC)
    listed = parse_file_list(rec.LIST_2410)
    assert listed[0].content_type == "text/plain; charset=utf-8" and listed[0].path == "/mnt/data/cert.txt"
    assert parse_file_list(rec.LIST_2410_EMPTY) == []
    env = parse_file_list(rec.LIST_2402)
    assert [(f.name, f.size) for f in env] == [("test1.txt", 16), ("test2.txt", 17)]
    assert env[1].modified is not None  # last_modified_time spelling
    assert parse_upload(rec.UPLOAD_2402, "test1.txt").size == 16


def test_parse_file_variants():
    assert parse_file({"name": "d", "type": "Directory"}).type == "directory"
    assert parse_file({"name": "f", "type": "File"}).type == "file"
    assert parse_file({"name": "t.yaml", "directory": "level1/level2", "type": "File"}).name == "level1/level2/t.yaml"
    assert parse_file({"properties": {"filename": "/mnt/data/x.txt"}}).name == "x.txt"
    assert parse_file({"name": "bad", "lastModifiedAt": "not a date"}).modified is None


def test_parse_session():
    info = parse_session(rec.SESSION_2502, "fallback")
    assert info.identifier == "testid1" and info.etag == "9334cb07-aafd-45a0-90bd-448080a91f57"
    assert info.expires_at is not None and info.created_at is not None
    assert parse_session({}, "fallback").identifier == "fallback"
