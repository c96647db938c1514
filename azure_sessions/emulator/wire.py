"""Wire shapes of both API dialects: request parsing and pure functions from backend objects to JSON replies.

The envelope dialect (2024-02-02-preview, 2024-08-02-preview) wraps bodies in ``properties`` and lists files as
``value[].properties``; the resource dialect (2024-10-02-preview and later) has flat bodies and file resources.
"""

from __future__ import annotations

import base64
import binascii
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from ..dialects import ENVELOPE_VERSIONS, SUPPORTED_API_VERSIONS
from . import errors
from .files import FileEntry, iso_time
from .sessions import DEFAULT_TIMEOUT_SECONDS, FAILED, SUCCEEDED, Execution, Session

SUPPORTED_HEADER = ", ".join(SUPPORTED_API_VERSIONS)
CAPPED_OUTPUT_VERSION = "2025-10-02-preview"
"""The version whose stdout and stderr are cut to ``DEFAULT_OUTPUT_MAX_LENGTH`` unless the request says otherwise."""
DEFAULT_OUTPUT_MAX_LENGTH = 4096


def check_version(version: str | None) -> str:
    if version not in SUPPORTED_API_VERSIONS:
        raise errors.unsupported_api_version(version, SUPPORTED_API_VERSIONS)
    return version


def is_envelope(version: str) -> bool:
    return version in ENVELOPE_VERSIONS


def execute_status_code(version: str, asynchronous: bool = False) -> int:
    """202 for 2024-10-02-preview (as the live service answers) and asynchronous calls, 200 for 2025-* and the
    envelope dialect."""
    if asynchronous or version == "2024-10-02-preview":
        return 202
    return 200


def output_limit(version: str, requested: int | None) -> int | None:
    """How many characters of stdout and stderr an execution's replies carry (None: all)."""
    if requested is not None:
        return requested
    return DEFAULT_OUTPUT_MAX_LENGTH if version == CAPPED_OUTPUT_VERSION else None


# -- requests ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutionRequest:
    """An execute request's body, read from either dialect."""

    code: str
    execution_type: str  # as sent: "Synchronous" or "Asynchronous", in any letter case
    timeout: float
    output_max_length: int | None  # None: the version's default (see ``output_limit``)

    @property
    def asynchronous(self) -> bool:
        return self.execution_type.lower() == "asynchronous"


def parse_execution_request(body: Any) -> ExecutionRequest:
    """Accept either dialect's body (with or without ``properties``), case-insensitive enums."""
    if not isinstance(body, dict):
        raise errors.invalid_body("The request body must be a JSON object.")
    props = body.get("properties") if isinstance(body.get("properties"), dict) else body
    if "shellCommand" in props or "execCommandAndArgs" in props:
        raise errors.invalid_body(
            "This is a Python code-interpreter pool; shellCommand/execCommandAndArgs are for Shell pools."
        )
    code = _code(props)
    execution_type = str(props.get("executionType") or "Synchronous")
    if execution_type.lower() not in ("synchronous", "asynchronous"):
        raise errors.invalid_body(f"Unknown executionType {execution_type!r}; use Synchronous or Asynchronous.")
    timeout = _timeout(props)
    max_length = props.get("outputStreamsMaxLength")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0):
        raise errors.invalid_body("`outputStreamsMaxLength` must be a non-negative integer.")
    return ExecutionRequest(code, execution_type, timeout, max_length)


def _code(props: dict[str, Any]) -> str:
    code = props.get("code")
    if not isinstance(code, str):
        raise errors.invalid_body("The `code` field is required and must be a string.")
    input_type = str(props.get("codeInputType") or "Inline")
    if input_type.lower() == "inlinebase64":
        try:
            return base64.b64decode(code, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.invalid_body("`code` is not valid base64-encoded UTF-8.") from None
    if input_type.lower() not in ("inline", "inlinetext"):
        raise errors.invalid_body(f"Unknown codeInputType {input_type!r}; use Inline, InlineBase64 or InlineText.")
    return code


def _timeout(props: dict[str, Any]) -> float:
    timeout = props.get("timeoutInSeconds", DEFAULT_TIMEOUT_SECONDS)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_SECONDS
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
        raise errors.invalid_body("`timeoutInSeconds` must be a number.")
    try:
        return float(timeout)
    except ValueError:
        raise errors.invalid_body("`timeoutInSeconds` must be a number.") from None


def _truncate(text: str, limit: int | None) -> str:
    return text if limit is None else text[:limit]


# -- executions --------------------------------------------------------------------------------------------------
def envelope_execution(record: Execution) -> dict[str, Any]:
    limit = record.output_max_length
    return {
        "$id": "1",
        "properties": {
            "$id": "2",
            "status": "Success" if record.status == SUCCEEDED else "Failure",
            "stdout": _truncate(record.stdout, limit),
            "stderr": _truncate(record.stderr, limit),
            "result": record.result,
            "executionTimeInMilliseconds": record.duration_ms,
        },
    }


def resource_execution(record: Execution) -> dict[str, Any]:
    limit = record.output_max_length
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
            "stdout": _truncate(record.stdout, limit),
            "stderr": _truncate(record.stderr, limit),
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


def operation_headers(record: Execution, version: str, collection_url: str) -> dict[str, str]:
    """Where an asynchronous execution's client polls it: ``collection_url`` is the ``executions`` URL."""
    location = (
        f"{collection_url}/{quote(record.id, safe='')}"
        f"?api-version={version}&identifier={quote(record.identifier, safe='')}"
    )
    return {"operation-id": record.id, "Operation-Location": location}


# -- files -------------------------------------------------------------------------------------------------------
def download_name(rest: str, version: str) -> str | None:
    """The file a ``files/{rest}`` path downloads (``files/content/{name}``, envelope dialect, or
    ``files/{name}/content``), or None when it asks for the file's metadata."""
    if is_envelope(version) and rest.startswith("content/"):
        return rest[len("content/") :]
    if rest.endswith("/content") and rest != "/content":
        return rest[: -len("/content")]
    return None


def file_list(entries: list[FileEntry], version: str) -> dict[str, Any]:
    return envelope_file_list(entries) if is_envelope(version) else resource_file_list(entries, version)


def file_metadata(entry: FileEntry, version: str) -> dict[str, Any]:
    return envelope_file_list([entry]) if is_envelope(version) else resource_file(entry, version, listing=False)


def upload_reply(entry: FileEntry, version: str) -> dict[str, Any]:
    return envelope_upload(entry) if is_envelope(version) else resource_upload(entry, version)


def envelope_upload(entry: FileEntry) -> dict[str, Any]:
    """The envelope dialect answers an upload with a file list of the one file."""
    return envelope_file_list([entry])


def deleted_reply(version: str) -> dict[str, Any] | None:
    """The body of a file deletion's reply; None: ``204 No Content``."""
    return {"message": "file deleted successfully"} if is_envelope(version) else None


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
    """The live service answers uploads with empty ``type`` and ``contentType``."""
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


def session_list(sessions: list[Session]) -> dict[str, Any]:
    return {"sessions": [session_body(s) for s in sessions]}


def session_stopped(identifier: str, pool_name: str) -> str:
    return f"Session {identifier} in session pool {pool_name} stopped."


# -- the pool ----------------------------------------------------------------------------------------------------
def pool_metadata(started_at: str) -> dict[str, Any]:
    """What the pool runs: this Python, its installed packages and IPython (imported on the first call)."""
    import IPython

    return {
        "runtimes": [{"name": "python", "version": sys.version.split()[0]}],
        "preInstalledPackages": [{"name": n, "version": v} for n, v in _packages()],
        "createdAt": started_at,
        "lastUpdatedAt": started_at,
        "jupyterKernel": {
            "name": "python3",
            "version": IPython.__version__,
            "projectUrl": "https://ipython.org",
            "description": "IPython interactive shell (local dynamic-sessions emulator)",
        },
    }


@lru_cache(maxsize=1)
def _packages() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(name, dist.version)
    return tuple(sorted(found.items(), key=lambda item: item[0].lower()))
