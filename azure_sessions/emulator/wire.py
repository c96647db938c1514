"""Wire shapes of both API dialects (reference §3-6 and §10): pure functions from backend objects to JSON."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..dialects import ENVELOPE_VERSIONS, SUPPORTED_API_VERSIONS
from . import errors
from .files import FileEntry, iso_time
from .sessions import DEFAULT_TIMEOUT_SECONDS, FAILED, SUCCEEDED, Execution, Session

SUPPORTED_HEADER = ", ".join(SUPPORTED_API_VERSIONS)


def check_version(version: str | None) -> str:
    if version not in SUPPORTED_API_VERSIONS:
        raise errors.unsupported_api_version(version, SUPPORTED_API_VERSIONS)
    return version


def is_envelope(version: str) -> bool:
    return version in ENVELOPE_VERSIONS


def execute_status_code(version: str, asynchronous: bool = False) -> int:
    """202 for 2024-10-02-preview (live capture) and asynchronous calls, 200 for 2025-* and the envelope dialect."""
    if asynchronous or version == "2024-10-02-preview":
        return 202
    return 200


# -- requests ----------------------------------------------------------------------------------------------------
def parse_execution_request(body: Any) -> dict[str, Any]:
    """Accept either dialect's body (with or without ``properties``), case-insensitive enums."""
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.", "InvalidRequestBody")
    props = body.get("properties") if isinstance(body.get("properties"), dict) else body
    if "shellCommand" in props or "execCommandAndArgs" in props:
        raise errors.bad_request(
            "This is a Python code-interpreter pool; shellCommand/execCommandAndArgs are for Shell pools.",
            "InvalidRequestBody",
        )
    code = props.get("code")
    if not isinstance(code, str):
        raise errors.bad_request("The `code` field is required and must be a string.", "InvalidRequestBody")
    input_type = str(props.get("codeInputType") or "Inline")
    if input_type.lower() == "inlinebase64":
        try:
            code = base64.b64decode(code, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.bad_request("`code` is not valid base64-encoded UTF-8.", "InvalidRequestBody") from None
    elif input_type.lower() not in ("inline", "inlinetext"):
        raise errors.bad_request(
            f"Unknown codeInputType {input_type!r}; use Inline, InlineBase64 or InlineText.", "InvalidRequestBody"
        )
    execution_type = str(props.get("executionType") or "Synchronous")
    if execution_type.lower() not in ("synchronous", "asynchronous"):
        raise errors.bad_request(
            f"Unknown executionType {execution_type!r}; use Synchronous or Asynchronous.", "InvalidRequestBody"
        )
    timeout = props.get("timeoutInSeconds", DEFAULT_TIMEOUT_SECONDS)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_SECONDS
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
        raise errors.bad_request("`timeoutInSeconds` must be a number.", "InvalidRequestBody")
    try:
        timeout = float(timeout)
    except ValueError:
        raise errors.bad_request("`timeoutInSeconds` must be a number.", "InvalidRequestBody") from None
    max_length = props.get("outputStreamsMaxLength")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0):
        raise errors.bad_request("`outputStreamsMaxLength` must be a non-negative integer.", "InvalidRequestBody")
    return {
        "code": code,
        "execution_type": execution_type,
        "asynchronous": execution_type.lower() == "asynchronous",
        "timeout": timeout,
        "output_max_length": max_length,
    }


def _truncate(text: str, limit: int | None) -> str:
    return text if limit is None else text[:limit]


# -- executions --------------------------------------------------------------------------------------------------
def envelope_execution(record: Execution, output_max_length: int | None = None) -> dict[str, Any]:
    return {
        "$id": "1",
        "properties": {
            "$id": "2",
            "status": "Success" if record.status == SUCCEEDED else "Failure",
            "stdout": _truncate(record.stdout, output_max_length),
            "stderr": _truncate(record.stderr, output_max_length),
            "result": record.result,
            "executionTimeInMilliseconds": record.duration_ms,
        },
    }


def resource_execution(record: Execution, output_max_length: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "$id": "1",
        "id": record.id,
        "identifier": record.identifier,
        "executionType": record.execution_type,
        "status": record.status,
    }
    if record.status in (SUCCEEDED, FAILED):
        body["result"] = {
            "$id": "2",
            "stdout": _truncate(record.stdout, output_max_length),
            "stderr": _truncate(record.stderr, output_max_length),
            "executionResult": record.result,
            "executionTimeInMilliseconds": record.duration_ms,
        }
    return body


def execution_headers(record: Execution) -> dict[str, str]:
    if not record.session_guid:
        return {}
    t = record.timings
    return {
        "x-ms-session-guid": record.session_guid,
        "x-ms-allocation-retries": "0",
        "x-ms-allocation-time": f"{t.get('allocation', 0.0):.4f}",
        "x-ms-preparation-time": f"{max(0.0, t.get('preparation', 0.0)):.4f}",
        "x-ms-execution-request-time": f"{t.get('execution', 0.0):.4f}",
        "x-ms-execution-read-response-time": "0.0000",
        "x-ms-container-execution-duration": f"{record.duration_ms:.4f}",
        "x-ms-overall-execution-time": f"{t.get('overall', 0.0):.4f}",
        "x-ms-total-execution-service-time": f"{t.get('overall', 0.0):.4f}",
    }


# -- files -------------------------------------------------------------------------------------------------------
def envelope_file_list(entries: list[FileEntry]) -> dict[str, Any]:
    value = []
    next_id = 2
    for entry in entries:
        if entry.is_dir:
            continue
        value.append(
            {
                "$id": str(next_id),
                "properties": {
                    "$id": str(next_id + 1),
                    "filename": entry.path,
                    "size": entry.size,
                    "lastModifiedTime": iso_time(entry.modified),
                },
            }
        )
        next_id += 2
    return {"$id": "1", "value": value}


def resource_file(entry: FileEntry, version: str, *, listing: bool = True, with_id: str | None = "1") -> dict:
    body: dict[str, Any] = {} if with_id is None else {"$id": with_id}
    body["name"] = entry.name
    if version == "2025-10-02-preview":
        body["directory"] = entry.directory
    if listing or entry.is_dir:
        body["type"] = "directory" if entry.is_dir else "file"
        if not entry.is_dir:
            body["contentType"] = entry.content_type
    body["sizeInBytes"] = entry.size
    body["lastModifiedAt"] = iso_time(entry.modified)
    return body


def resource_upload(entry: FileEntry, version: str) -> dict[str, Any]:
    """The live service answered uploads with empty ``type`` and ``contentType`` (reference §4.2)."""
    body: dict[str, Any] = {"$id": "1", "name": entry.name}
    if version == "2025-10-02-preview":
        body["directory"] = entry.directory
    body |= {"type": "", "contentType": "", "sizeInBytes": entry.size, "lastModifiedAt": iso_time(entry.modified)}
    return body


def resource_file_list(entries: list[FileEntry], version: str) -> dict[str, Any]:
    return {
        "$id": "1",
        "value": [resource_file(e, version, with_id=str(i)) for i, e in enumerate(entries, start=2)],
    }


# -- sessions ----------------------------------------------------------------------------------------------------
def session_body(session: Session) -> dict[str, Any]:
    return {
        "identifier": session.identifier,
        "createdAt": iso_time(session.created_at),
        "lastAccessedAt": iso_time(session.last_accessed_at),
        "expireAt": iso_time(session.expires_at),
        "etag": session.guid or "",
    }
