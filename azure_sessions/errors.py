"""One exception family for everything the sessions client can raise.

Every error is a :class:`SessionsError` carrying ``status_code`` (HTTP status, or ``None`` when no reply arrived),
``error_code`` (the service's ``x-ms-error-code`` header or ``error.code`` body field) and a ``message`` that says
what to do next. Subclasses tell *why* it failed; branch on the class, never on message text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .retry import parse_retry_after

MAX_UPLOAD_BYTES = 128 * 1024 * 1024
"""The service's upload limit (128 MiB); larger uploads are refused before sending."""

_BODY_EXCERPT = 2048
EXECUTOR_ROLE = "Azure ContainerApps Session Executor"


class SessionsError(Exception):
    """Base class: a dynamic-sessions call failed.

    :ivar status_code: the HTTP status of the reply, or ``None`` when no reply was received.
    :ivar error_code: the service's error code (``x-ms-error-code`` header or ``error.code``), if any.
    :ivar message: a human sentence saying what went wrong and what to do next.
    """

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code

    def __str__(self) -> str:
        details = [f"HTTP {self.status_code}"] if self.status_code is not None else []
        if self.error_code:
            details.append(f"code {self.error_code}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class InvalidFileNameError(SessionsError, ValueError):
    """A file name was refused on the client (empty, ``..``, NUL, absolute or too long); nothing was sent."""


class FileTooLargeError(SessionsError):
    """The upload exceeds the service's 128 MiB limit (refused client-side, or HTTP 413)."""


class ClientAuthenticationError(SessionsError):
    """HTTP 401: the bearer token was missing, expired or issued for the wrong audience."""


class PermissionDeniedError(SessionsError):
    """HTTP 403: the identity lacks the "Azure ContainerApps Session Executor" role on the pool."""


class NotFoundError(SessionsError):
    """HTTP 404: unknown file, execution or pool (or, on execute, the pool is at its session limit)."""


class ThrottledError(SessionsError):
    """HTTP 429 with a ``Retry-After``: the service asked us to slow down, and the retries it paced were exhausted."""


class PoolFullError(SessionsError):
    """No session could be allocated: the pool has as many sessions as its ``maxConcurrentSessions`` allows.

    Microsoft Learn says the service answers such requests with 404; a production report (langchain-azure issue 714)
    shows ``429 Too Many Requests``. Raised for a reply that says the pool is full (its error code or message), for a
    404 to an execution, and for a 429 that does not say when to come back (no ``Retry-After``); never retried, since
    a slot frees only when a session is deleted or idles past the pool's cooldown. The message says what to do."""


class NotARegularFileError(SessionsError):
    """The file exists but is not a regular file (a symbolic link, a FIFO, a socket, a directory), so the service
    will not read or follow it; ``reason`` is the service's own sentence (``'x' is a link: links are not
    followed. ...``), which ``message`` carries too. Sandboxed code can make such files in ``/mnt/data``; delete
    them or use regular files."""

    def __init__(self, message: str, *, reason: str = "", **details: Any) -> None:
        super().__init__(message, **details)
        self.reason = reason


class ServiceError(SessionsError):
    """Any other error reply (5xx and unexpected 4xx) from the service."""


class ServiceRequestError(SessionsError):
    """The request never reached the service (connection refused, DNS failure, connect timeout)."""


class ServiceResponseError(SessionsError):
    """The request was sent but no usable reply came back (read timeout, dropped connection, truncated body)."""


class InterruptNotSupportedError(SessionsError):
    """The service cannot interrupt a running execution (Azure dynamic sessions have no such operation): the code
    runs until it finishes or reaches its timeout. Deleting the session ends it at once, with its variables and files."""


class CredentialUnavailableError(SessionsError):
    """No usable credential: azure-identity is missing, or no identity could produce a token."""


def _parse_error_body(body: bytes | str | None) -> tuple[str | None, str | None]:
    """(code, message) from an Azure.Core error body, a bare JSON string, or plain text."""
    if not body:
        return None, None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None, text.strip()[:_BODY_EXCERPT] or None
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            code = err.get("code")
            message = err.get("message")
            return (str(code) if code else None), (str(message)[:_BODY_EXCERPT] if message else None)
        if isinstance(err, str):
            return None, err[:_BODY_EXCERPT]
        return None, None
    if isinstance(data, str):
        return None, data[:_BODY_EXCERPT]
    return None, None


POOL_FULL_ADVICE = (
    "could not get a session: the session pool is at its maximum number of concurrent sessions "
    "(maxConcurrentSessions). Delete sessions you no longer need (DELETE session; executor.cleanup()), wait for idle "
    "ones to expire after the pool's cooldown period, or raise the pool's maxConcurrentSessions; sending the request "
    "again at once will not help."
)
_POOL_FULL = re.compile(r"max\w*concurrent\w*sessions|pool\W*(is\W*)?full|session\W*limit", re.IGNORECASE)
_NOT_POOL_404 = frozenset({"NotFound", "OperationNotSupportedInApiVersion"})
"""404 codes that mean something other than a full pool even on an execution (the emulator's unknown route, and a
route the api-version lacks)."""
_NOT_REGULAR_CODES = frozenset({"LinkNotFollowed", "NotARegularFile"})


def says_pool_full(status: int, headers: Mapping[str, str], body: bytes | str | None, operation: str) -> bool:
    """Whether an error reply means that the pool is full (see :class:`PoolFullError`)."""
    return _pool_full(status, headers, *_parse_error_body(body), operation) is not None


def _pool_full(
    status: int, headers: Mapping[str, str], code: str | None, message: str | None, operation: str
) -> str | None:
    """Why the reply means a full pool (the sentence to add to the advice), or None when it does not."""
    code = headers.get("x-ms-error-code") or code
    if _POOL_FULL.search(code or "") or _POOL_FULL.search(message or ""):
        return ""
    if status == 429 and parse_retry_after(headers) is None:
        return " (HTTP 429 without Retry-After is how a full pool answers; a throttled call says when to retry.)"
    if status == 404 and operation == "execute" and code not in _NOT_POOL_404:
        return " If the pool is not full, check the pool management endpoint: a wrong one is also answered with 404."
    return None


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str | None,
    *,
    operation: str,
    target: str | None = None,
) -> SessionsError:
    """Build the right :class:`SessionsError` subclass for an error reply.

    :param status: HTTP status code.
    :param headers: reply headers (case-insensitive mapping).
    :param body: reply body, if read.
    :param operation: what we were doing, e.g. ``"execute"``, ``"download"`` (used for the hint).
    :param target: the file name or execution id concerned, if any.
    """
    body_code, service_message = _parse_error_body(body)
    error_code = headers.get("x-ms-error-code") or body_code
    said = f" The service said: {service_message}" if service_message else ""
    what = f"{operation} {target!r}" if target else operation
    full = _pool_full(status, headers, body_code, service_message, operation)
    if full is not None:
        return PoolFullError(f"{what} {POOL_FULL_ADVICE}{full}{said}", status_code=status, error_code=error_code)
    if error_code in _NOT_REGULAR_CODES:
        reason = service_message or (f"{target!r} is not a regular file" if target else "it is not a regular file")
        return NotARegularFileError(
            f"{what} was refused: {reason}", reason=reason, status_code=status, error_code=error_code
        )
    if status == 400 and service_message:
        return ServiceError(f"{what} was rejected by the service: {service_message}", status_code=400,
                            error_code=error_code)  # fmt: skip
    cls, explanation = _explain(status, operation, target)
    return cls(f"{what} {explanation}{said}", status_code=status, error_code=error_code)


_EXPLANATIONS: dict[int, tuple[type[SessionsError], str]] = {
    400: (
        ServiceError,
        "was rejected as a bad request; check the api-version, the session identifier and the arguments.",
    ),
    401: (
        ClientAuthenticationError,
        "was not authenticated. Check the credential: it must produce a token for the audience "
        "https://dynamicsessions.io (scope https://dynamicsessions.io/.default) in the pool's tenant.",
    ),
    403: (
        PermissionDeniedError,
        f"was forbidden. Assign the {EXECUTOR_ROLE!r} role on the session pool to this identity "
        "(role assignments can take a few minutes to apply).",
    ),
    413: (
        FileTooLargeError,
        "was refused as too large: the service accepts uploads up to 128 MiB "
        f"({MAX_UPLOAD_BYTES} bytes). Split or compress the file.",
    ),
    429: (
        ThrottledError,
        "was throttled by the service and the retries it paced (Retry-After) were exhausted; wait and try again "
        "later.",
    ),
}
"""The error class and what to do next, by status (404 and 5xx depend on more than the status)."""


def _explain(status: int, operation: str, target: str | None) -> tuple[type[SessionsError], str]:
    """The error class for ``status`` and the sentence that follows the operation's name in its message."""
    if status in _EXPLANATIONS:
        return _EXPLANATIONS[status]
    if status == 404:
        return NotFoundError, f"failed. {_not_found_hint(operation, target)}"
    if status >= 500:
        return ServiceError, "failed on the service side; this is usually transient, try again shortly."
    return ServiceError, "failed with an unexpected reply."


def _not_found_hint(operation: str, target: str | None) -> str:
    if target:
        return f"No such file or item {target!r} in the session's /mnt/data (list_files() shows what exists)."
    return "Not found: check the pool management endpoint and the api-version."
