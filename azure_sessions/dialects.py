"""Every supported api-version's traits, in one table, and its wire shapes: requests built and replies parsed.

:data:`API_VERSIONS` is the one place an api-version is named: the client builds its requests from a version's row,
and the emulator validates requests and shapes replies from the same row. A new version is one new row.

Two dialects exist:

* **envelope** (``2024-02-02-preview``, ``2024-08-02-preview``): ``code/execute`` with ``{"properties": {...}}``,
  ``files/upload``, ``files/content/{name}``, file lists as ``value[].properties``;
* **resource** (``2024-10-02-preview`` and later): ``executions`` with a flat body, ``result.executionResult``,
  ``files``, ``files/{name}`` and ``files/{name}/content``; session routes from ``2025-02-02-preview``.

Parsing is liberal: keys are matched case-insensitively, missing fields become ``None``, both shapes are
recognized whatever the version. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .failures import execution_error
from .models import MAX_EXECUTION_SECONDS, ExecutionImage, ExecutionResult, FileInfo, SessionInfo

ENVELOPE, RESOURCE = "envelope", "resource"
"""The two dialects."""

RENDER_LEGACY, RENDER_JSON, RENDER_JUPYTER = "legacy", "json", "jupyter"
"""How a cell's last value is written in ``result``/``executionResult``:

* ``legacy``: JSON scalars natively, ``""`` for none, every other value (``float('nan')`` included) as its ``repr``;
* ``json``: as ``legacy``, but a non-finite float (``nan``, ``inf``) is ``null`` (2025-10-02-preview's default);
* ``jupyter``: every value as Jupyter's ``text/plain`` (``'nan'`` for the string, ``nan`` for the float, ``42``),
  ``null`` for none (2025-10-02-preview with ``returnJupyterFormatExecutionResult: true``)."""

# Routes, as "METHOD path" relative to the pool endpoint ({name}: a file name, {id}: an execution id).
EXECUTE_ENVELOPE = "POST code/execute"
UPLOAD_ENVELOPE = "POST files/upload"
DOWNLOAD_ENVELOPE = "GET files/content/{name}"
EXECUTE = "POST executions"
GET_EXECUTION = "GET executions/{id}"
UPLOAD = "POST files"
DOWNLOAD = "GET files/{name}/content"
LIST_FILES = "GET files"
FILE_INFO = "GET files/{name}"
DELETE_FILE = "DELETE files/{name}"
GET_SESSION = "GET session"
DELETE_SESSION = "DELETE session"
LIST_SESSIONS = "GET listSessions"
METADATA = "GET metadata"
STOP_SESSION = "POST .management/stopSession"
_FILE_ROUTES = frozenset({LIST_FILES, FILE_INFO, DELETE_FILE})
_ENVELOPE_ROUTES = _FILE_ROUTES | {EXECUTE_ENVELOPE, UPLOAD_ENVELOPE, DOWNLOAD_ENVELOPE}
_RESOURCE_ROUTES = _FILE_ROUTES | {EXECUTE, GET_EXECUTION, UPLOAD, DOWNLOAD}
_SESSION_ROUTES = frozenset({GET_SESSION, DELETE_SESSION, LIST_SESSIONS, METADATA})

# The fields of an execution request.
CODE = "code"
CODE_INPUT_TYPE = "codeInputType"
EXECUTION_TYPE = "executionType"
TIMEOUT = "timeoutInSeconds"
OUTPUT_MAX_LENGTH = "outputStreamsMaxLength"
EMPTY_KERNEL = "useEmptyKernel"
JUPYTER_FORMAT = "returnJupyterFormatExecutionResult"
CODE_INPUT_TYPES = ("Inline", "InlineBase64", "InlineText")
EXECUTION_TYPES = ("Synchronous", "Asynchronous")


@dataclass(frozen=True, slots=True)
class IdentifierRule:
    """What a session identifier may be: its length and its characters besides ASCII letters and digits."""

    min_length: int
    max_length: int
    punctuation: str

    def problem(self, identifier: str) -> str | None:
        """Why ``identifier`` breaks the rule (a sentence naming the length or the first bad character), or None."""
        if _pattern(self).fullmatch(identifier):
            return None
        if not self.min_length <= len(identifier) <= self.max_length:
            count = f"{len(identifier)} character{'s' * (len(identifier) != 1)}"
            return f"it has {count}; it must have {self.min_length} to {self.max_length}"
        allowed = _ALPHANUMERIC + self.punctuation
        bad = next((ch for ch in identifier if ch not in allowed), None)
        if bad is not None:
            return f"it contains {bad!r}; only ASCII letters, digits and {self.punctuation} are allowed"
        return None


_ALPHANUMERIC = string.ascii_letters + string.digits


@functools.cache
def _pattern(rule: IdentifierRule) -> re.Pattern[str]:
    """The rule as one compiled pattern: the fast check of every request's identifier."""
    allowed = re.escape(_ALPHANUMERIC + rule.punctuation)
    return re.compile(f"[{allowed}]{{{rule.min_length},{rule.max_length}}}")


SPEC_IDENTIFIER = IdentifierRule(4, 128, "_|}{[]:\";'<>?/.,@#$%^&*()-+=!~`")
"""The ``identifier`` pattern of the 2024-10/2025-02/2025-10 specifications (``^[a-zA-Z0-9_|}{\\[\\]:...]{4,128}$``),
which agrees in length with Microsoft Learn's "Identifier format" (whose character list is a subset of it)."""


@dataclass(frozen=True, slots=True)
class VersionTraits:
    """What one api-version is, on the wire: its row in :data:`API_VERSIONS`. Each field's source is in
    ``docs/emulator-fidelity.md``."""

    api_version: str
    dialect: str
    """:data:`ENVELOPE` or :data:`RESOURCE`."""
    routes: frozenset[str]
    """The operations the version serves (``"POST executions"``, ``"GET session"``...)."""
    execute_status: int
    """The HTTP status of a synchronous execution's reply."""
    output_cap: int | None
    """The default ``outputStreamsMaxLength``: stdout and stderr are cut to it (None: not cut)."""
    required_fields: tuple[str, ...]
    """The execution request's fields the version requires."""
    typed_fields: bool
    """Field types and enum values are checked as the specification states them (no specification exists for the
    envelope versions: their fields are read liberally, as every client of them sends them)."""
    options: frozenset[str]
    """The optional execution fields the version added (``useEmptyKernel``, ``returnJupyterFormatExecutionResult``,
    ``outputStreamsMaxLength``)."""
    identifier: IdentifierRule
    rendering: str
    """How the last value is rendered by default (:data:`RENDER_LEGACY`, :data:`RENDER_JSON`)."""
    file_directory: bool
    """File resources carry ``directory`` (their parent, relative to ``/mnt/data``)."""
    file_info_type: str | None
    """``type`` of a regular file in the metadata reply (``GET files/{name}``), whose ``contentType`` comes with it;
    None: neither is sent (what the live service answered at 2024-10-02-preview)."""

    @property
    def envelope(self) -> bool:
        return self.dialect == ENVELOPE

    def serves(self, route: str) -> bool:
        return route in self.routes


_ENVELOPE_ROW = dict(
    dialect=ENVELOPE,
    routes=_ENVELOPE_ROUTES,
    execute_status=200,
    output_cap=None,
    required_fields=(CODE,),
    typed_fields=False,
    options=frozenset({OUTPUT_MAX_LENGTH}),
    identifier=SPEC_IDENTIFIER,
    rendering=RENDER_LEGACY,
    file_directory=False,
    file_info_type=None,
)
_STRICT_FIELDS = (CODE_INPUT_TYPE, EXECUTION_TYPE, CODE, TIMEOUT)

API_VERSIONS: dict[str, VersionTraits] = {
    traits.api_version: traits
    for traits in (
        VersionTraits("2024-02-02-preview", **_ENVELOPE_ROW),
        VersionTraits("2024-08-02-preview", **_ENVELOPE_ROW),
        VersionTraits(
            "2024-10-02-preview",
            dialect=RESOURCE,
            routes=_RESOURCE_ROUTES,
            execute_status=202,  # the live recording; the current specification declares 200
            output_cap=None,
            required_fields=_STRICT_FIELDS,
            typed_fields=True,
            options=frozenset({OUTPUT_MAX_LENGTH}),
            identifier=SPEC_IDENTIFIER,
            rendering=RENDER_LEGACY,
            file_directory=False,
            file_info_type=None,  # the live recording; the specification requires "type"
        ),
        VersionTraits(
            "2025-02-02-preview",
            dialect=RESOURCE,
            routes=_RESOURCE_ROUTES | _SESSION_ROUTES,
            execute_status=200,
            output_cap=None,
            required_fields=_STRICT_FIELDS,
            typed_fields=True,
            options=frozenset({OUTPUT_MAX_LENGTH}),
            identifier=SPEC_IDENTIFIER,
            rendering=RENDER_LEGACY,
            file_directory=False,
            file_info_type="File",
        ),
        VersionTraits(
            "2025-10-02-preview",
            dialect=RESOURCE,
            routes=_RESOURCE_ROUTES | _SESSION_ROUTES | {STOP_SESSION},
            execute_status=200,
            output_cap=4096,
            required_fields=(TIMEOUT,),
            typed_fields=True,
            options=frozenset({OUTPUT_MAX_LENGTH, EMPTY_KERNEL, JUPYTER_FORMAT}),
            identifier=SPEC_IDENTIFIER,
            rendering=RENDER_JSON,
            file_directory=True,
            file_info_type="File",
        ),
    )
}
"""Every supported api-version, oldest first."""

SUPPORTED_API_VERSIONS = tuple(API_VERSIONS)
ENVELOPE_VERSIONS = tuple(v for v, traits in API_VERSIONS.items() if traits.envelope)
RESOURCE_VERSIONS = tuple(v for v, traits in API_VERSIONS.items() if not traits.envelope)
DEFAULT_API_VERSION = "2024-10-02-preview"
SESSION_ROUTE_VERSION = next(v for v, traits in API_VERSIONS.items() if traits.serves(DELETE_SESSION))
"""The first version with ``GET/DELETE session``; used for session calls on older versions."""
REQUIRED_BY_ANY = tuple(dict.fromkeys(f for traits in API_VERSIONS.values() for f in traits.required_fields))
"""Every execution field some version requires: what a client sends so that every version accepts it."""


def traits_of(api_version: str) -> VersionTraits:
    """The row of ``api_version``; :class:`ValueError` naming the supported versions otherwise."""
    traits = API_VERSIONS.get(api_version)
    if traits is None:
        raise ValueError(f"unsupported api_version {api_version!r}; supported: {', '.join(SUPPORTED_API_VERSIONS)}")
    return traits


def first_version_serving(route: str) -> str | None:
    """The oldest supported version that serves ``route``."""
    return next((v for v, traits in API_VERSIONS.items() if traits.serves(route)), None)


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

    def __init__(self, traits: VersionTraits) -> None:
        self.traits = traits
        self.api_version = traits.api_version
        self._session_version = None if traits.serves(DELETE_SESSION) else SESSION_ROUTE_VERSION

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_version!r})"

    @staticmethod
    def timeout_seconds(timeout: float) -> int:
        """The ``timeoutInSeconds`` to send: whole seconds, at least 1, at most 220."""
        return max(1, min(MAX_EXECUTION_SECONDS, int(-(-timeout // 1))))

    def execution_body(self, code: str, timeout: float) -> dict[str, Any]:
        """What both dialects send to run ``code`` synchronously (the envelope dialect wraps it in ``properties``):
        every field any version requires (:data:`REQUIRED_BY_ANY`), so the strictest version accepts it."""
        return {
            CODE_INPUT_TYPE: "inline",
            EXECUTION_TYPE: "synchronous",
            CODE: code,
            TIMEOUT: self.timeout_seconds(timeout),
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
        return Operation("GET", f"executions/{quote(execution_id, safe='')}")


_DIALECTS: dict[str, type[Dialect]] = {ENVELOPE: EnvelopeDialect, RESOURCE: ResourceDialect}


def get_dialect(api_version: str) -> Dialect:
    """The dialect for ``api_version``; :class:`ValueError` naming the supported versions otherwise."""
    traits = traits_of(api_version)
    return _DIALECTS[traits.dialect](traits)


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


def normalize_status(status: Any) -> str | None:
    """``Success``/``Failure``/OperationState/shell exit code → ``Succeeded``/``Failed``/``Running``/...; None when
    the reply has no status."""
    if status is None or status == "":
        return None
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
    error_body = _lower(_first(props, "error") or _first(fields, "error"))
    if error_body and not stderr:
        stderr = ": ".join(_text(error_body.get(k)) for k in ("code", "message") if error_body.get(k))
    images: tuple[ExecutionImage, ...] = ()
    image = _image(value)
    if image is not None:
        images, value = (image,), None
    elif isinstance(value, list) and value and all(_image(v) is not None for v in value):
        images, value = tuple(_image(v) for v in value), None  # type: ignore[misc]
    if value == "":
        value = None
    reported = normalize_status(_first(props, "status") or _first(top, "status"))
    # Anything but success counts as a failure: also an execution still Running when the client stopped waiting.
    error = execution_error(stderr, failed=reported not in (None, "Succeeded"), error=error_body or None)
    status = reported or ("Failed" if error else "Succeeded")
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
        error=error,
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
