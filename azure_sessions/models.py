"""Typed values returned by the sessions client. Parsing from the wire lives in :mod:`azure_sessions.dialects`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_EXECUTION_SECONDS = 220
"""The service's maximum run time for one code execution, in seconds."""

SESSION_LOST_NOTICE = (
    "NOTICE: the remote sandbox session was recycled by the service (it expired, was deleted or its worker "
    "restarted). All variables, imports and files in /mnt/data from earlier steps were lost; "
    "re-create what you need before using it."
)
"""Prepended to an executor's logs when the service's session guid changed since the previous call."""

_STATUS_SUCCEEDED = "Succeeded"


@dataclass(frozen=True, slots=True)
class ExecutionImage:
    """An image the code produced (e.g. a matplotlib figure), decoded from ``{type: image, format, base64_data}``."""

    format: str
    """Image format as reported by the service, e.g. ``"png"``."""
    data: bytes = field(repr=False)
    """The raw encoded image bytes."""

    def to_pil(self) -> Any:
        """Open the image with Pillow (imported lazily) and return a ``PIL.Image.Image``."""
        from io import BytesIO

        import PIL.Image

        image = PIL.Image.open(BytesIO(self.data))
        image.load()
        return image


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """Why an execution failed: the exception the code raised, read once from what the service returned
    (:func:`azure_sessions.failures.execution_error`). Every layer reads these fields instead of parsing stderr."""

    name: str
    """The exception's class name (``"ZeroDivisionError"``, ``"KeyboardInterrupt"``), or the emulator's notice that
    ended the execution (``"TimeoutError"`` after its timeout, ``"SessionLost"``); ``""`` when the service's output
    was cut off before the exception's line."""
    value: str
    """The exception's message (``"division by zero"``), which may span lines; ``""`` when it has none."""
    traceback: str
    """The traceback as the service sent it, from its first ``Traceback (most recent call last)`` header (chained
    exceptions included) to the end of stderr; the whole stderr when there is no header (a ``SyntaxError``)."""
    interrupted: bool
    """The code was ended by an interrupt (a ``KeyboardInterrupt``): :meth:`SessionsClient.interrupt`, or its
    timeout."""

    @property
    def label(self) -> str:
        """``"ZeroDivisionError: division by zero"`` (the first line of the value), the name alone, or ``"Error"``."""
        first = self.value.strip().splitlines()[0] if self.value.strip() else ""
        name = self.name or "Error"
        return f"{name}: {first}" if first else name


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of one code execution.

    An exception in the user's code is data (``status == "Failed"``, traceback in ``stderr``), not a raise;
    service and transport failures are raised as :class:`~azure_sessions.errors.SessionsError`.
    """

    status: str
    """Normalized status: ``"Succeeded"``, ``"Failed"``, ``"Running"``, ``"NotStarted"`` or ``"Canceled"``
    (the envelope dialect's ``"Success"``/``"Failure"`` become ``"Succeeded"``/``"Failed"``)."""
    stdout: str = ""
    """Everything the code printed to standard output (the service may truncate long output)."""
    stderr: str = ""
    """Standard error, including the traceback when the code raised."""
    result: Any = None
    """The value of the last expression (JSON scalars natively, other objects as repr strings); ``None`` when
    there was none. Image results are in :attr:`images`, not here."""
    images: tuple[ExecutionImage, ...] = ()
    """Images produced by the execution."""
    duration_ms: int | None = None
    """Execution time reported by the service, in milliseconds."""
    session_guid: str | None = None
    """The service's ``x-ms-session-guid`` header: changes when the session was re-allocated."""
    execution_id: str | None = None
    """The execution's id (resource dialect only)."""
    error: ExecutionError | None = None
    """Why the code failed (the exception it raised), or None when it did not. Set when the service reported anything
    but success (an execution still running when the client stopped waiting included), and also when stderr holds a
    traceback under a reported success (what the service reports for an exception is not documented)."""

    @property
    def succeeded(self) -> bool:
        """True when the service reported success."""
        return self.status == _STATUS_SUCCEEDED


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What one execution of an agent's code produced, as the executor reports it to its listeners
    (see :meth:`~azure_sessions.AzureDynamicSessionsExecutor.add_listener`)."""

    code: str
    """The code that ran."""
    result: ExecutionResult
    """The service's result: ``error`` says what the code raised, ``images`` holds the figures."""
    stdout: str
    """What the code printed, without the executor's own final-answer frame."""
    session_lost: bool = False
    """The service had recycled the session before this execution: earlier variables and files are gone."""
    final_answer: bool = False
    """The code called ``final_answer()``."""

    @property
    def error(self) -> ExecutionError | None:
        """Why the code failed (see :class:`ExecutionError`); None when it did not, or when it gave the final
        answer (which smolagents signals with an exception)."""
        return None if self.final_answer else self.result.error

    @property
    def failed(self) -> bool:
        """True when the code raised (:attr:`error` says what)."""
        return self.error is not None


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file (or directory) in the session's ``/mnt/data``."""

    name: str
    """Name relative to ``/mnt/data`` (``"report.csv"``, or ``"sub/dir/file.txt"``)."""
    size: int | None
    """Size in bytes, when known."""
    modified: datetime | None
    """Last modification time (timezone-aware), when known."""
    type: str = "file"
    """``"file"`` or ``"directory"`` (lower case)."""
    content_type: str | None = None
    """The MIME type reported by the service, if any."""

    @property
    def path(self) -> str:
        """Absolute path inside the sandbox, e.g. ``/mnt/data/report.csv``."""
        return f"/mnt/data/{self.name}"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Metadata of one session (``GET session``, api-version 2025-02-02-preview and later)."""

    identifier: str
    """The session identifier."""
    created_at: datetime | None
    """When the session was allocated."""
    last_accessed_at: datetime | None
    """Last call on the session (each call resets the idle timer)."""
    expires_at: datetime | None
    """When the session will be destroyed unless used again."""
    etag: str | None
    """Opaque id of the underlying container."""
