"""Wire shapes of both API dialects: request parsing and pure functions from backend objects to JSON replies.

Every version-dependent choice reads the version's row of :data:`azure_sessions.dialects.API_VERSIONS` (its
:class:`~azure_sessions.dialects.VersionTraits`): which routes it serves, which fields it requires, how it renders a
value, what its file replies carry. The envelope dialect (2024-02-02-preview, 2024-08-02-preview) wraps bodies in
``properties`` and lists files as ``value[].properties``; the resource dialect (2024-10-02-preview and later) has
flat bodies and file resources.
"""

from __future__ import annotations

import base64
import binascii
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from ..dialects import (
    API_VERSIONS,
    CODE,
    CODE_INPUT_TYPE,
    CODE_INPUT_TYPES,
    DOWNLOAD,
    DOWNLOAD_ENVELOPE,
    EMPTY_KERNEL,
    EXECUTION_TYPE,
    EXECUTION_TYPES,
    JUPYTER_FORMAT,
    OUTPUT_MAX_LENGTH,
    RENDER_JUPYTER,
    SUPPORTED_API_VERSIONS,
    TIMEOUT,
    VersionTraits,
    first_version_serving,
)
from . import errors
from .files import FileEntry, iso_time
from .sessions import DEFAULT_TIMEOUT_SECONDS, FAILED, SUCCEEDED, Execution, Session

SUPPORTED_HEADER = ", ".join(SUPPORTED_API_VERSIONS)
_INT32 = (-(2**31), 2**31 - 1)
_LOWER = {values: frozenset(v.lower() for v in values) for values in (CODE_INPUT_TYPES, EXECUTION_TYPES)}
_JUPYTER_FORMAT_ALIAS = "returnJupyterFormat"
"""How two of the specification's 2025-10-02-preview examples spell ``returnJupyterFormatExecutionResult``."""


def check_version(version: str | None) -> VersionTraits:
    """The traits of a supported ``api-version``; 400 naming the supported ones otherwise."""
    traits = API_VERSIONS.get(version or "")
    if traits is None:
        raise errors.unsupported_api_version(version, SUPPORTED_API_VERSIONS)
    return traits


def check_route(traits: VersionTraits, route: str) -> None:
    """404 when the version does not serve ``route`` (``"POST executions"``...)."""
    if not traits.serves(route):
        method, _, path = route.partition(" ")
        raise errors.operation_not_in_version(method, path, traits.api_version, first_version_serving(route))


def execute_status_code(traits: VersionTraits, asynchronous: bool = False) -> int:
    """202 for an asynchronous execution, else the version's status for a synchronous one."""
    return 202 if asynchronous else traits.execute_status


def output_limit(traits: VersionTraits, requested: int | None) -> int | None:
    """How many characters of stdout and stderr an execution's replies carry (None: all)."""
    return requested if requested is not None else traits.output_cap


# -- requests ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutionRequest:
    """An execute request's body, read from either dialect."""

    code: str
    execution_type: str  # as sent: "Synchronous" or "Asynchronous", in any letter case
    timeout: float
    output_max_length: int | None  # None: the version's default (see ``output_limit``)
    rendering: str  # how the last value is written (dialects.RENDER_*)
    empty_kernel: bool = False  # useEmptyKernel: a namespace of its own for this execution

    @property
    def asynchronous(self) -> bool:
        return self.execution_type.lower() == "asynchronous"


def parse_execution_request(body: Any, traits: VersionTraits) -> ExecutionRequest:
    """Read an execution request as ``traits`` states it: its required fields, their types and enum values (in any
    letter case, as the live service accepts ``inline``), its optional fields. 400 naming the field otherwise. The
    ``properties`` envelope is accepted in both dialects."""
    if not isinstance(body, dict):
        raise errors.invalid_body("The request body must be a JSON object.")
    props = body.get("properties") if isinstance(body.get("properties"), dict) else body
    for shell_field in ("shellCommand", "execCommandAndArgs"):
        if shell_field in props:
            raise errors.invalid_body(
                f"The {shell_field} field is for Shell session pools; this is a Python code-interpreter pool: send "
                "code.",
                shell_field,
            )
    for field in traits.required_fields:
        if props.get(field) is None:
            raise errors.missing_field(field, traits.api_version)
    execution_type = _enum(props, EXECUTION_TYPE, EXECUTION_TYPES, traits)
    max_length = props.get(OUTPUT_MAX_LENGTH)  # honoured in every version (it arrived in 2025-10-02-preview)
    if max_length is not None and not _is_int(max_length, 0):
        raise errors.invalid_body(f"The {OUTPUT_MAX_LENGTH} field must be a non-negative integer.", OUTPUT_MAX_LENGTH)
    jupyter = _flag(props, JUPYTER_FORMAT, traits) or _flag(props, _JUPYTER_FORMAT_ALIAS, traits, JUPYTER_FORMAT)
    return ExecutionRequest(
        code=_code(props, traits),
        execution_type=execution_type,
        timeout=_timeout(props, traits),
        output_max_length=max_length,
        rendering=RENDER_JUPYTER if jupyter else traits.rendering,
        empty_kernel=_flag(props, EMPTY_KERNEL, traits),
    )


def _code(props: dict[str, Any], traits: VersionTraits) -> str:
    code = props.get(CODE)
    if code is None:
        raise errors.invalid_body(
            f"The {CODE} field is required: a Python code-interpreter pool runs the code it is sent.", CODE
        )
    if not isinstance(code, str):
        raise errors.invalid_body(f"The {CODE} field must be a string.", CODE)
    if _enum(props, CODE_INPUT_TYPE, CODE_INPUT_TYPES, traits).lower() == "inlinebase64":
        try:
            return base64.b64decode(code, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.invalid_body(f"The {CODE} field is not valid base64-encoded UTF-8.", CODE) from None
    return code


def _enum(props: dict[str, Any], field: str, values: tuple[str, ...], traits: VersionTraits) -> str:
    """The field's value as sent (its first value when absent); 400 naming the field and its values otherwise."""
    value = props.get(field)
    if value is None:
        return values[0]
    if not isinstance(value, str) and traits.typed_fields:
        raise errors.invalid_body(f"The {field} field must be a string: one of {', '.join(values)}.", field)
    if str(value).lower() not in _LOWER[values]:
        raise errors.invalid_body(f"The {field} field must be one of {', '.join(values)}, not {value!r}.", field)
    return str(value)


def _timeout(props: dict[str, Any], traits: VersionTraits) -> float:
    """Seconds; an integer where a specification types it, any number (or numeric text) in the envelope versions."""
    timeout = props.get(TIMEOUT)
    if timeout is None:
        return DEFAULT_TIMEOUT_SECONDS
    if traits.typed_fields:
        if not _is_int(timeout, _INT32[0]):
            raise errors.invalid_body(f"The {TIMEOUT} field must be an integer number of seconds.", TIMEOUT)
        return float(timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
        raise errors.invalid_body(f"The {TIMEOUT} field must be a number of seconds.", TIMEOUT)
    try:
        return float(timeout)
    except ValueError:
        raise errors.invalid_body(f"The {TIMEOUT} field must be a number of seconds.", TIMEOUT) from None


def _flag(props: dict[str, Any], field: str, traits: VersionTraits, option: str | None = None) -> bool:
    """A boolean option the version defines (ignored, as an unknown field, where it does not)."""
    value = props.get(field)
    if value is None or (option or field) not in traits.options:
        return False
    if not isinstance(value, bool):
        raise errors.invalid_body(f"The {field} field must be true or false.", field)
    return value


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= _INT32[1]


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
def download_name(rest: str, traits: VersionTraits) -> str | None:
    """The file a ``GET files/{rest}`` downloads (``files/content/{name}`` or ``files/{name}/content``, as the version
    serves), or None when it asks for the file's metadata."""
    if traits.serves(DOWNLOAD_ENVELOPE) and rest.startswith("content/"):
        return rest[len("content/") :]
    if traits.serves(DOWNLOAD) and rest.endswith("/content") and rest != "/content":
        return rest[: -len("/content")]
    return None


def file_list(entries: list[FileEntry], traits: VersionTraits) -> dict[str, Any]:
    if traits.envelope:
        return envelope_file_list(entries)
    return {
        "$id": "1",
        "value": [resource_file(e, traits, with_id=str(i)) for i, e in enumerate(entries, start=2)],
    }


def file_metadata(entry: FileEntry, traits: VersionTraits) -> dict[str, Any]:
    """``GET files/{name}``: the envelope's one-item list (the container samples), or the resource with ``type``
    and ``contentType`` where the version sends them (not at 2024-10-02-preview, as the live service answered)."""
    if traits.envelope:
        return envelope_file_list([entry])
    body: dict[str, Any] = {"$id": "1", "name": entry.name}
    if traits.file_directory:
        body["directory"] = entry.directory
    if traits.file_info_type is not None:
        body["type"] = "Directory" if entry.is_dir else traits.file_info_type
        if not entry.is_dir:
            body["contentType"] = entry.content_type
    elif entry.is_dir:
        body["type"] = "directory"
    body["sizeInBytes"] = entry.size
    body["lastModifiedAt"] = iso_time(entry.modified)
    return body


def upload_reply(entry: FileEntry, traits: VersionTraits) -> dict[str, Any]:
    """The envelope answers with a file list of the one file; the resource dialect with the file, whose ``type`` and
    ``contentType`` the live service leaves empty."""
    if traits.envelope:
        return envelope_file_list([entry])
    body: dict[str, Any] = {"$id": "1", "name": entry.name}
    if traits.file_directory:
        body["directory"] = entry.directory
    body |= {"type": "", "contentType": "", "sizeInBytes": entry.size, "lastModifiedAt": iso_time(entry.modified)}
    return body


def deleted_reply(traits: VersionTraits) -> dict[str, Any] | None:
    """The body of a file deletion's reply; None: ``204 No Content``."""
    return {"message": "file deleted successfully"} if traits.envelope else None


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


def resource_file(entry: FileEntry, traits: VersionTraits, *, with_id: str | None = "1") -> dict[str, Any]:
    """A file list's entry, as the live service writes it (``type`` in lower case, ``contentType`` for files)."""
    body: dict[str, Any] = {} if with_id is None else {"$id": with_id}
    body["name"] = entry.name
    if traits.file_directory:
        body["directory"] = entry.directory
    body["type"] = "directory" if entry.is_dir else "file"
    if not entry.is_dir:
        body["contentType"] = entry.content_type
    body["sizeInBytes"] = entry.size
    body["lastModifiedAt"] = iso_time(entry.modified)
    return body


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
