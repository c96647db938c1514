"""One error type and one factory for every error the emulator puts on the wire.

Every error becomes the Azure.Core shape ``{"error": {"code": ..., "message": ..., "target"?: ...}}`` plus an
``x-ms-error-code`` header, as the specification declares. The codes and messages are the emulator's own (no source
shows one the service sends; see docs/emulator-fidelity.md); messages say what to do next, and a request field or
parameter at fault is named in ``target``.
"""

from __future__ import annotations

from typing import Any


class EmulatorError(Exception):
    """An error with an HTTP status and an Azure service error code; raised by the backend and the routes alike."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, target: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.target = target

    def body(self) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        return {"error": error}

    def __repr__(self) -> str:
        return f"EmulatorError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "BadRequest") -> EmulatorError:
    return EmulatorError(400, code, message)


def invalid_body(message: str, target: str | None = None) -> EmulatorError:
    return EmulatorError(400, "InvalidRequestBody", message, target=target)


def missing_field(field: str, version: str) -> EmulatorError:
    return invalid_body(f"The {field} field is required at api-version {version}.", field)


def invalid_identifier(identifier: str, why: str) -> EmulatorError:
    return EmulatorError(
        400,
        "InvalidIdentifier",
        f"The identifier query parameter is not valid: {why}. A UUID is typical.",
        target="identifier",
    )


def link_not_followed(name: str) -> EmulatorError:
    return EmulatorError(
        409,
        "LinkNotFollowed",
        f"{_shown(name)!r} is a link: links are not followed. Only regular files and directories in /mnt/data can be "
        "read, listed or written through; delete the link or write a regular file instead.",
    )


def not_a_regular_file(name: str, kind: str = "a special file (a FIFO, a socket or a device)") -> EmulatorError:
    return EmulatorError(
        409,
        "NotARegularFile",
        f"{_shown(name)!r} is not a regular file: it is {kind}. Only regular files can be downloaded or uploaded "
        "over; delete it or use another name.",
    )


def operation_not_in_version(method: str, path: str, version: str, first: str | None) -> EmulatorError:
    since = f" It exists from api-version {first} on." if first else ""
    return EmulatorError(
        404,
        "OperationNotSupportedInApiVersion",
        f"{method} {path} is not an operation of api-version {version}.{since}",
    )


def _shown(name: str) -> str:
    return name if len(name) <= 80 else name[:77] + "..."


def invalid_file_name(name: str, why: str) -> EmulatorError:
    shown = _shown(name)
    return EmulatorError(
        400, "InvalidFileName", f"The file name {shown!r} is not allowed: {why}. Use a name relative to /mnt/data."
    )


def unauthorized(message: str) -> EmulatorError:
    return EmulatorError(401, "Unauthorized", message, {"WWW-Authenticate": 'Bearer realm="dynamicsessions.io"'})


def not_found(message: str, code: str = "NotFound") -> EmulatorError:
    return EmulatorError(404, code, message)


def file_not_found(name: str) -> EmulatorError:
    return not_found(f"The file {name!r} does not exist in /mnt/data of this session.", "FileNotFound")


def session_not_found(identifier: str) -> EmulatorError:
    return not_found(
        f"No session with identifier {identifier!r} exists (it was never used, was deleted, or expired).",
        "SessionNotFound",
    )


POOL_FULL_STATUSES = (404, 429)
"""How a full pool can answer: 404 (Microsoft Learn, the default) or 429 (a production report)."""


def pool_full(max_sessions: int, status: int = 404) -> EmulatorError:
    return EmulatorError(
        status,
        "MaxConcurrentSessionsReached",
        f"The session pool has reached its maximum of {max_sessions} concurrent sessions. Delete idle sessions "
        "(DELETE session) or wait for them to expire after the cooldown period.",
    )


def too_many_readers(what: str) -> EmulatorError:
    """The live-output route's bound (an emulator extension): too many readers at once."""
    return EmulatorError(
        429,
        "TooManyOutputReaders",
        f"Too many {what} at once. Close a reader of the live output, or read the execution's result instead.",
        headers={"Retry-After": "1"},
    )


def payload_too_large(limit: int) -> EmulatorError:
    return EmulatorError(
        413, "PayloadTooLarge", f"The uploaded file exceeds the limit of {limit} bytes ({limit // (1024 * 1024)} MiB)."
    )


def disk_budget_exceeded(used: int, budget: int, upload: bool = False) -> EmulatorError:
    """The session's files take its whole disk budget (``used`` of ``budget`` bytes), or the upload would pass it."""
    mib = 1024 * 1024
    held = f"the session's files hold {used // mib} MiB of its {budget // mib} MiB disk budget (/mnt/data and /tmp)"
    what = (f"The upload does not fit: {held}, {max(budget - used, 0) // mib} MiB left" if upload
            else f"The session is out of disk space: {held}")  # fmt: skip
    return EmulatorError(409, "SessionDiskBudgetExceeded", f"{what}. Delete files in /mnt/data, then upload again.")


def unsupported_api_version(version: str | None, supported: tuple[str, ...]) -> EmulatorError:
    if not version:
        return EmulatorError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter is required. Supported versions: " + ", ".join(supported) + ".",
        )
    return EmulatorError(
        400,
        "UnsupportedApiVersion",
        f"The api-version {version!r} is not supported. Supported versions: " + ", ".join(supported) + ".",
    )


def injected(status: int, retry_after: float | None) -> EmulatorError:
    codes = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
    headers = {"Retry-After": _retry_after(retry_after)} if retry_after is not None else {}
    return EmulatorError(
        status,
        codes.get(status, f"Http{status}"),
        f"Injected fault: HTTP {status} (emulator fault injection).",
        headers,
    )


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
