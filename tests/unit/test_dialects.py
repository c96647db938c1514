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


# ---------------------------------------------------------------------------------------------- the traits table
def test_one_row_per_supported_version_oldest_first():
    from azure_sessions.dialects import API_VERSIONS, ENVELOPE_VERSIONS, RESOURCE_VERSIONS

    assert tuple(API_VERSIONS) == SUPPORTED_API_VERSIONS == tuple(sorted(SUPPORTED_API_VERSIONS))
    assert ENVELOPE_VERSIONS == ("2024-02-02-preview", "2024-08-02-preview")
    assert set(RESOURCE_VERSIONS) == set(SUPPORTED_API_VERSIONS) - set(ENVELOPE_VERSIONS)
    for version, traits in API_VERSIONS.items():
        assert traits.api_version == version
        assert isinstance(get_dialect(version), EnvelopeDialect if traits.envelope else ResourceDialect)


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_the_client_sends_what_the_strictest_version_requires(version):
    from azure_sessions.dialects import REQUIRED_BY_ANY

    assert set(REQUIRED_BY_ANY) == {"codeInputType", "executionType", "code", "timeoutInSeconds"}
    op = get_dialect(version).execute("print(1)", 30)
    body = op.body.get("properties", op.body)
    assert set(REQUIRED_BY_ANY) <= set(body)


def test_session_calls_use_the_first_version_that_has_them():
    from azure_sessions.dialects import API_VERSIONS, SESSION_ROUTE_VERSION

    assert SESSION_ROUTE_VERSION == "2025-02-02-preview"
    for version, traits in API_VERSIONS.items():
        expected = None if traits.serves("DELETE session") else SESSION_ROUTE_VERSION
        assert get_dialect(version).delete_session().api_version == expected


@pytest.mark.parametrize(
    ("identifier", "problem"),
    [
        ("abc", "it has 3 characters; it must have 4 to 128"),
        ("x" * 129, "it has 129 characters"),
        ("a b c d", "it contains ' '"),
        ("café", "it contains 'é'"),
        ("abcd", None),
        ("a|b-c&d^e%f$g#(h){i}[j];k<l>_.:/?@*+=!~`,'\"", None),
    ],
)
def test_identifier_rule(identifier, problem):
    from azure_sessions.dialects import SPEC_IDENTIFIER

    found = SPEC_IDENTIFIER.problem(identifier)
    assert found == problem if problem is None else found.startswith(problem)


def test_no_api_version_is_named_outside_the_table():
    """Every version-dependent choice reads dialects.API_VERSIONS: no other module of the library names a version
    in its code (docstrings and comments may)."""
    import ast
    import re
    from pathlib import Path

    import azure_sessions

    literal = re.compile(r"20\d\d-\d\d-\d\d")
    package = Path(azure_sessions.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "dialects.py" and path.parent == package:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {  # a string standing alone as a statement documents what precedes or contains it
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and id(node) not in docstrings and literal.search(node.value):
                found.append(f"{path.relative_to(package)}:{node.lineno}: {node.value[:60]!r}")
    assert found == []
