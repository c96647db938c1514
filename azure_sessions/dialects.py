"""Wire shapes per api-version: build requests and parse replies. Pure functions, no I/O.

Two dialects exist:

* **envelope** (``2024-02-02-preview``, ``2024-08-02-preview``): ``code/execute`` with ``{"properties": {...}}``,
  ``files/upload``, ``files/content/{name}``, file lists as ``value[].properties``;
* **resource** (``2024-10-02-preview``, ``2025-02-02-preview``, ``2025-10-02-preview``): ``executions`` with a flat
  body, ``result.executionResult``, ``files``, ``files/{name}`` and ``files/{name}/content``; session routes from
  ``2025-02-02-preview``.

Parsing is liberal: keys are matched case-insensitively, missing fields become ``None``, both shapes are
recognized whatever the version.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import MAX_EXECUTION_SECONDS, ExecutionImage, ExecutionResult, FileInfo, SessionInfo

ENVELOPE_VERSIONS = ("2024-02-02-preview", "2024-08-02-preview")
RESOURCE_VERSIONS = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")
SUPPORTED_API_VERSIONS = ENVELOPE_VERSIONS + RESOURCE_VERSIONS
DEFAULT_API_VERSION = "2024-10-02-preview"
SESSION_ROUTE_VERSION = "2025-02-02-preview"
"""The first version with ``GET/DELETE session``; used for session calls on older versions."""
_SESSION_VERSIONS = tuple(version for version in RESOURCE_VERSIONS if version >= SESSION_ROUTE_VERSION)

_STATUS = {
    "success": "Succeeded",
    "succeeded": "Succeeded",
    "failure": "Failed",
    "failed": "Failed",
    "running": "Running",
    "notstarted": "NotStarted",
    "canceled": "Canceled",
    "cancelled": "Canceled",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP request to make, relative to the pool endpoint."""

    method: str
    path: str
    """Path after the endpoint, already percent-encoded (no leading slash)."""
    body: dict[str, Any] | None = None
    """JSON body, if any."""
    api_version: str | None = None
    """An api-version to use instead of the client's (session routes on older versions)."""
    params: tuple[tuple[str, str], ...] = ()
    """Extra query parameters."""


class Dialect:
    """Request builders for one api-version. Use :func:`get_dialect`."""

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        self._session_version = None if api_version in _SESSION_VERSIONS else SESSION_ROUTE_VERSION

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_version!r})"

    @staticmethod
    def timeout_seconds(timeout: float) -> int:
        """The ``timeoutInSeconds`` to send: whole seconds, at least 1, at most 220."""
        return max(1, min(MAX_EXECUTION_SECONDS, int(-(-timeout // 1))))

    def execution_body(self, code: str, timeout: float) -> dict[str, Any]:
        """What both dialects send to run ``code`` synchronously (the envelope dialect wraps it in ``properties``)."""
        return {
            "codeInputType": "inline",
            "executionType": "synchronous",
            "code": code,
            "timeoutInSeconds": self.timeout_seconds(timeout),
        }

    def execute(self, code: str, timeout: float) -> Operation:
        raise NotImplementedError

    def upload(self, name: str) -> tuple[Operation, str]:
        """The upload request and the multipart ``filename`` for the relative ``name``."""
        raise NotImplementedError

    def list_files(self) -> Operation:
        return Operation("GET", "files")

    def file_info(self, quoted: str) -> Operation | None:
        """The metadata request, or None when this dialect has none (then filter :meth:`list_files`)."""
        return None

    def download(self, quoted: str) -> Operation:
        raise NotImplementedError

    def delete_file(self, quoted: str) -> Operation:
        return Operation("DELETE", f"files/{quoted}")

    def get_session(self) -> Operation:
        return Operation("GET", "session", api_version=self._session_version)

    def delete_session(self) -> Operation:
        return Operation("DELETE", "session", api_version=self._session_version)

    def get_execution(self, execution_id: str) -> Operation | None:
        """Poll one execution (resource dialect only)."""
        return None


class EnvelopeDialect(Dialect):
    """2024-02-02-preview and 2024-08-02-preview."""

    def execute(self, code: str, timeout: float) -> Operation:
        return Operation("POST", "code/execute", {"properties": self.execution_body(code, timeout)})

    def upload(self, name: str) -> tuple[Operation, str]:
        return Operation("POST", "files/upload"), name

    def download(self, quoted: str) -> Operation:
        return Operation("GET", f"files/content/{quoted}")


class ResourceDialect(Dialect):
    """2024-10-02-preview, 2025-02-02-preview and 2025-10-02-preview."""

    def execute(self, code: str, timeout: float) -> Operation:
        return Operation("POST", "executions", self.execution_body(code, timeout))

    def upload(self, name: str) -> tuple[Operation, str]:
        directory, _, base = name.rpartition("/")
        return Operation("POST", "files", params=(("path", directory),) if directory else ()), base

    def file_info(self, quoted: str) -> Operation | None:
        return Operation("GET", f"files/{quoted}")

    def download(self, quoted: str) -> Operation:
        return Operation("GET", f"files/{quoted}/content")

    def get_execution(self, execution_id: str) -> Operation | None:
        from urllib.parse import quote

        return Operation("GET", f"executions/{quote(execution_id, safe='')}")


def get_dialect(api_version: str) -> Dialect:
    """The dialect for ``api_version``; :class:`ValueError` naming the supported versions otherwise."""
    if api_version in ENVELOPE_VERSIONS:
        return EnvelopeDialect(api_version)
    if api_version in RESOURCE_VERSIONS:
        return ResourceDialect(api_version)
    raise ValueError(f"unsupported api_version {api_version!r}; supported: {', '.join(SUPPORTED_API_VERSIONS)}")


# ---------------------------------------------------------------------------------------------------- parsing


def _lower(obj: Any) -> dict[str, Any]:
    """A dict's keys lower-cased (``{}`` for non-dicts), so lookups ignore the wire's casing."""
    return {str(k).lower(): v for k, v in obj.items()} if isinstance(obj, Mapping) else {}


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = d.get(key)
        if value is not None:
            return value
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_datetime(value: Any) -> datetime | None:
    """An ISO-8601 timestamp (``Z`` and 7 fractional digits accepted), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def normalize_status(status: Any, stderr: str = "") -> str:
    """``Success``/``Failure``/OperationState/shell exit code → ``Succeeded``/``Failed``/``Running``/..."""
    if status is None or status == "":
        return "Failed" if "Traceback (most recent call last)" in stderr else "Succeeded"
    text = str(status).strip()
    known = _STATUS.get(text.lower())
    if known:
        return known
    if text.lstrip("-").isdigit():  # shell pools report the exit code
        return "Succeeded" if int(text) == 0 else "Failed"
    return text


def _image(value: Any) -> ExecutionImage | None:
    if not isinstance(value, Mapping):
        return None
    d = _lower(value)
    if str(d.get("type", "")).lower() != "image" or "base64_data" not in d:
        return None
    try:
        data = base64.b64decode(d["base64_data"] or "")
    except (binascii.Error, TypeError, ValueError):
        return None
    return ExecutionImage(format=str(d.get("format") or "png").lower(), data=data)


def parse_execution(body: Any, session_guid: str | None = None) -> ExecutionResult:
    """An execute (or get-execution) reply in either dialect → :class:`ExecutionResult`."""
    top = _lower(body)
    props = _lower(top["properties"]) if isinstance(top.get("properties"), Mapping) else top
    raw_result = props.get("result")
    inner = _lower(raw_result)
    if inner and ("stdout" in inner or "stderr" in inner or "executionresult" in inner):
        # Resource dialect: {"status", "result": {"stdout", "stderr", "executionResult", ...}}
        value = _first(inner, "executionresult", "result")
        fields = inner
    else:
        value = raw_result if "result" in props else props.get("executionresult")
        fields = props
    stdout = _text(fields.get("stdout"))
    stderr = _text(fields.get("stderr"))
    error = _lower(_first(props, "error") or _first(fields, "error"))
    if error and not stderr:
        stderr = ": ".join(_text(error.get(k)) for k in ("code", "message") if error.get(k))
    images: tuple[ExecutionImage, ...] = ()
    image = _image(value)
    if image is not None:
        images, value = (image,), None
    elif isinstance(value, list) and value and all(_image(v) is not None for v in value):
        images, value = tuple(_image(v) for v in value), None  # type: ignore[misc]
    if value == "":
        value = None
    status = normalize_status(_first(props, "status") or _first(top, "status"), stderr)
    duration = _int(_first(fields, "executiontimeinmilliseconds") or _first(props, "executiontimeinmilliseconds"))
    execution_id = top.get("id") or props.get("id")
    return ExecutionResult(
        status=status,
        stdout=stdout,
        stderr=stderr,
        result=value,
        images=images,
        duration_ms=duration,
        session_guid=session_guid,
        execution_id=str(execution_id) if execution_id else None,
    )


def parse_file(item: Any, fallback_name: str | None = None) -> FileInfo:
    """One file entry in either dialect (``properties.{filename,size,lastModifiedTime}`` or the flat resource)."""
    d = _lower(item)
    if isinstance(d.get("properties"), Mapping):
        d = _lower(d["properties"])
    name = _text(_first(d, "name", "filename", "file_name")) or fallback_name or ""
    if name.startswith("/mnt/data/"):
        name = name[len("/mnt/data/") :]
    directory = _text(d.get("directory")).strip("/")
    if directory.startswith("mnt/data"):
        directory = directory[len("mnt/data") :].strip("/")
    if directory and "/" not in name:
        name = f"{directory}/{name}"
    kind = _text(d.get("type")).lower() or "file"
    return FileInfo(
        name=name,
        size=_int(_first(d, "sizeinbytes", "size")),
        modified=parse_datetime(_first(d, "lastmodifiedat", "lastmodifiedtime", "last_modified_time")),
        type="directory" if kind.startswith("dir") else kind,
        content_type=_text(d.get("contenttype")) or None,
    )


def parse_file_list(body: Any) -> list[FileInfo]:
    """A file list (``{"value": [...]}`` in both dialects; a bare list is accepted too)."""
    items = body if isinstance(body, list) else _lower(body).get("value") or []
    return [parse_file(item) for item in items if isinstance(item, Mapping)]


def parse_upload(body: Any, fallback_name: str) -> FileInfo:
    """An upload reply: a list (envelope) or a single object (resource); the sent name fills gaps."""
    if isinstance(body, list) or "value" in _lower(body):
        files = parse_file_list(body)
        match = next((f for f in files if f.name == fallback_name), files[0] if files else None)
        return match or FileInfo(name=fallback_name, size=None, modified=None)
    return parse_file(body, fallback_name)


def parse_file_info(body: Any, fallback_name: str) -> FileInfo:
    """A metadata reply: a single object, or (localhost envelope samples) a one-item list."""
    return parse_upload(body, fallback_name)


def parse_session(body: Any, fallback_identifier: str) -> SessionInfo:
    """A ``GET session`` reply → :class:`SessionInfo`."""
    d = _lower(body)
    return SessionInfo(
        identifier=_text(d.get("identifier")) or fallback_identifier,
        created_at=parse_datetime(d.get("createdat")),
        last_accessed_at=parse_datetime(d.get("lastaccessedat")),
        expires_at=parse_datetime(_first(d, "expireat", "expiresat", "expirationtime")),
        etag=_text(d.get("etag")) or None,
    )
