"""SessionsClient: one session of an Azure Container Apps dynamic-sessions pool, over one HTTP connection pool."""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter

from ._version import __version__
from .auth import DEFAULT_SCOPE, BearerAuth, TokenProvider
from .dialects import (
    DEFAULT_API_VERSION,
    Operation,
    get_dialect,
    parse_execution,
    parse_file_info,
    parse_file_list,
    parse_session,
    parse_upload,
)
from .endpoint import PoolEndpoint
from .errors import (
    InterruptNotSupportedError,
    ServiceRequestError,
    ServiceResponseError,
    SessionsError,
    error_from_response,
    says_pool_full,
)
from .live import OutputCallback, OutputFollower
from .models import MAX_EXECUTION_SECONDS, ExecutionResult, FileInfo, SessionInfo
from .names import normalize_name, quote_path
from .retry import RetryPolicy, is_connect_failure
from .uploads import MultipartBody, UploadSource

_log = logging.getLogger(__name__)

EXECUTE_READ_MARGIN_SECONDS = 30.0
"""Added to an execution's own timeout to get the HTTP read timeout."""
UPLOAD_MIN_READ_TIMEOUT = 120.0
_POLL_INTERVAL = 0.5
_JSON_HEADERS = {"Content-Type": "application/json"}
_PENDING = frozenset({"Running", "NotStarted"})
_INTERRUPT = Operation("POST", ".emulator/interrupt")
"""The local emulator's extension route; the service itself has no way to interrupt an execution."""
_LIVE_OUTPUT = ".emulator/output"
"""The local emulator's live-output route (an extension too): an execution's output as it is written."""
LIVE_OUTPUT_DRAIN_SECONDS = 2.0
"""After an execution returned, how long its live output may take to deliver what it still holds."""
_LIVE_OUTPUT_READ_TIMEOUT = 10.0
"""The stream sends a line at least every second, output or not."""
_NO_INTERRUPT = (
    "This session pool cannot interrupt a running execution: the code runs until it finishes or reaches its "
    "timeout. Delete the session to end it now (its variables and files are lost)."
)


def _http_session(url: str, user_agent: str | None) -> requests.Session:
    """One keep-alive connection pool; requests' own retries are off (the client's :class:`RetryPolicy` decides)."""
    http = requests.Session()
    # Read proxy and CA settings from the environment once, not on every call (requests' trust_env scans
    # os.environ per request); ~/.netrc is never consulted since every request carries our own auth.
    http.trust_env = False
    http.proxies = requests.utils.get_environ_proxies(url)
    http.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    agent = f"azure-sessions-python/{__version__} Python/{platform.python_version()} requests/{requests.__version__}"
    http.headers.update({"User-Agent": f"{user_agent} {agent}" if user_agent else agent})
    return http


@dataclass(frozen=True, slots=True)
class _Call:
    """One call to the service: its request, how to send it again, and which replies mean success."""

    op: Operation
    name: str
    """What the call does, for messages: ``"execute"``, ``"download"``..."""
    target: str | None = None
    """The file name or execution id concerned, for messages."""
    idempotent: bool = True
    """Sending it twice does no harm: it may be sent again even when it may have reached the service."""
    ok: tuple[int, ...] = (200,)
    ok_404_on_retry: bool = False
    """A 404 after an attempt that may have worked counts as success (deleting a file)."""
    timeout: tuple[float, float] | None = None
    """(connect, read) seconds; None for the client's own."""
    stream: bool = False
    body: Callable[[], MultipartBody] | None = None
    """Builds a fresh multipart body for each attempt (uploads); None to send ``op.body`` as JSON."""
    headers: Mapping[str, str] | None = None

    @property
    def resendable(self) -> bool:
        """Its request can be sent again after a 401 (which the service refused without acting on)."""
        return self.body is None or self.idempotent


class SessionsClient:
    """Client for one session (``identifier``) of a code-interpreter session pool.

    :param endpoint: the pool management endpoint, ``https://<region>.dynamicsessions.io/subscriptions/.../
        sessionPools/<pool>`` (or the local emulator's).
    :param identifier: the session identifier; default a random UUID4. Treat it as a secret.
    :param credential: a ``TokenCredential``, a callable returning a token, a static token string, or ``None``
        for ``DefaultAzureCredential`` (see :mod:`azure_sessions.auth`).
    :keyword api_version: one of :data:`~azure_sessions.SUPPORTED_API_VERSIONS`; default ``2024-10-02-preview``.
    :keyword managed_identity_client_id: user-assigned managed identity for the default credential
        (default: env ``AZURE_SESSIONS_MANAGED_IDENTITY_CLIENT_ID``).
    :keyword connect_timeout: seconds to establish a connection (default 10).
    :keyword read_timeout: seconds to wait for a reply to non-execute calls (default 60).
    :keyword retry: a :class:`~azure_sessions.retry.RetryPolicy` (default: 4 attempts, exponential back-off).
    :keyword user_agent: prepended to the User-Agent header.
    :keyword scope: token scope (default ``https://dynamicsessions.io/.default``).
    :raises ValueError: unknown api-version or malformed endpoint.
    """

    def __init__(
        self,
        endpoint: str,
        identifier: str | None = None,
        credential: Any = None,
        *,
        api_version: str = DEFAULT_API_VERSION,
        managed_identity_client_id: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        user_agent: str | None = None,
        scope: str = DEFAULT_SCOPE,
    ) -> None:
        self._dialect = get_dialect(api_version)
        self._pool = PoolEndpoint.parse(endpoint)
        self._identifier = identifier or str(uuid.uuid4())
        self._query = self._build_query(api_version)
        self._tokens = TokenProvider(credential, scope=scope, managed_identity_client_id=managed_identity_client_id)
        self._auth = BearerAuth(self._tokens)
        self._connect_timeout = connect_timeout
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry or RetryPolicy()
        self._closed = False
        self._interruptible: bool | None = False if self._pool.is_azure else None
        self._live_output: bool | None = False if self._pool.is_azure else None
        self._http = _http_session(self._pool.url, user_agent)

    def _build_query(self, api_version: str) -> str:
        query = urlencode({"api-version": api_version, "identifier": self._identifier})
        return f"{self._pool.query}&{query}" if self._pool.query else query

    # ------------------------------------------------------------------ lifecycle and properties

    def __enter__(self) -> SessionsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._closed = True
        self._http.close()

    def __repr__(self) -> str:
        short = self._identifier[:8] + ("…" if len(self._identifier) > 8 else "")
        return (
            f"SessionsClient(endpoint={self._pool.url!r}, identifier={short!r}, "
            f"api_version={self.api_version!r}, credential={self._tokens.kind!r})"
        )

    @property
    def endpoint(self) -> str:
        """The pool management endpoint (without trailing slash)."""
        return self._pool.url

    @property
    def identifier(self) -> str:
        """The session identifier."""
        return self._identifier

    @property
    def api_version(self) -> str:
        """The api-version in use."""
        return self._dialect.api_version

    @property
    def pool_name(self) -> str:
        """The pool's name: the path segment after ``sessionPools/``, else the endpoint's last segment."""
        return self._pool.pool_name

    # ------------------------------------------------------------------ code execution

    def execute(self, code: str, *, timeout: float = 60.0, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run ``code`` in the session and return its :class:`ExecutionResult`.

        An exception in the code is reported in the result (``status == "Failed"``), not raised. Never sent twice:
        retried only when the request provably never reached the service, or after a 429.

        :param timeout: the execution's time limit in seconds (capped at 220 by the service).
        :param on_output: ``on_output(stream, text)`` is called with what the code writes to ``"stdout"`` and
            ``"stderr"`` while it runs, where the endpoint can stream it (the local emulator; see
            :attr:`supports_live_output`). It is called from a thread of the client's, one call at a time, and never
            after ``execute`` returned; keep it quick. It previews the output: normally all of it arrives before
            ``execute`` returns, but the result is the whole truth (what a broken stream lost is still in it). On an
            Azure pool, which cannot stream, it is never called and nothing more is sent.
        :raises PoolFullError: the pool is at its maximum number of sessions (HTTP 404 or 429); not retried.
        :raises SessionsError: transport or service failure (see :mod:`azure_sessions.errors`).
        """
        op = self._dialect.execute(code, timeout)
        read = min(float(timeout), MAX_EXECUTION_SECONDS) + EXECUTE_READ_MARGIN_SECONDS
        # One operation-id per logical execution, the same on every attempt: a service that already ran it
        # answers with that execution instead of running the code again.
        operation_id = str(uuid.uuid4())
        headers = {**_JSON_HEADERS, "operation-id": operation_id}
        call = _Call(
            op, "execute", idempotent=False, timeout=(self._connect_timeout, read), ok=(200, 202), headers=headers
        )
        follower = self._follow_output(operation_id, on_output) if on_output is not None else None
        try:
            response = self._send(call)
            result = parse_execution(self._json(response, "execute"), response.headers.get("x-ms-session-guid"))
            if result.status in _PENDING and result.execution_id:
                result = self._poll(result, deadline=time.monotonic() + read)
        except BaseException:
            if follower is not None:
                follower.stop()
            raise
        if follower is not None:
            follower.stop(drain=LIVE_OUTPUT_DRAIN_SECONDS)
        return result

    @property
    def supports_live_output(self) -> bool | None:
        """Whether ``execute(on_output=...)`` previews output as it is written: False for Azure pools (the service
        cannot stream an execution's output; the result brings all of it when the code ends), True once the local
        emulator streamed some, None while unknown (no execution with ``on_output`` yet on a non-Azure endpoint)."""
        return self._live_output

    def _follow_output(self, operation_id: str, on_output: OutputCallback) -> OutputFollower | None:
        """Start reading the live output of the execution ``operation_id``, where the endpoint may stream it."""
        if self._live_output is False or self._closed:
            return None
        url = self._url(Operation("GET", _LIVE_OUTPUT, params=(("operation", operation_id),)))
        timeout = (self._connect_timeout, _LIVE_OUTPUT_READ_TIMEOUT)

        def open_stream() -> requests.Response:
            return self._http.get(url, auth=self._auth, timeout=timeout, stream=True)

        def learned(streams: bool) -> None:
            self._live_output = streams

        return OutputFollower(open_stream, on_output, learned).start()

    @property
    def supports_interrupt(self) -> bool | None:
        """Whether :meth:`interrupt` works here: False for Azure pools (the service has no interrupt), True once the
        local emulator accepted one, None while unknown (not tried yet on a non-Azure endpoint)."""
        return self._interruptible

    def interrupt(self) -> bool:
        """Interrupt the session's running execution, where the service supports it (the local emulator does): the
        execution ends with a ``KeyboardInterrupt`` and the session keeps its variables and files, as after a
        timeout. Safe to call from another thread while :meth:`execute` waits.

        :returns: True when an execution was interrupted, False when none was running.
        :raises InterruptNotSupportedError: the service has no interrupt (every Azure pool); nothing was sent to Azure.
        """
        if self._interruptible is False:
            raise InterruptNotSupportedError(_NO_INTERRUPT)
        try:
            response = self._send(_Call(_INTERRUPT, "interrupt"))
        except SessionsError as exc:
            if exc.status_code in (400, 404, 405, 501):
                self._interruptible = False
                raise InterruptNotSupportedError(_NO_INTERRUPT, status_code=exc.status_code) from None
            raise
        self._interruptible = True
        return bool(self._json(response, "interrupt").get("interrupted"))

    def _poll(self, result: ExecutionResult, deadline: float) -> ExecutionResult:
        op = self._dialect.get_execution(result.execution_id or "")
        while op is not None and result.status in _PENDING and time.monotonic() < deadline:
            self._retry.sleep(_POLL_INTERVAL)
            response = self._send(_Call(op, "get execution", target=result.execution_id))
            result = parse_execution(self._json(response, "get execution"), result.session_guid)
        return result

    # ------------------------------------------------------------------ files

    def upload(self, source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> FileInfo:
        """Upload a file (path or binary file object, streamed from its current position) to ``/mnt/data``.

        :param name: name in ``/mnt/data`` (a leading ``/mnt/data/`` is stripped); default the source's basename.
        :raises FileTooLargeError: above 128 MiB (checked before sending when the size is known).
        :raises InvalidFileNameError: refused name (nothing sent).
        """
        relative = normalize_name(name) if name is not None else None  # a bad name is refused before opening
        src = UploadSource(source)
        try:
            if relative is None:
                if not src.default_name:
                    raise ValueError("name= is required when uploading a file object without a name")
                relative = normalize_name(src.default_name)
            op, filename = self._dialect.upload(relative)
            read = max(self._timeout[1], UPLOAD_MIN_READ_TIMEOUT)
            call = _Call(
                op,
                "upload",
                target=relative,
                idempotent=src.rewindable,
                timeout=(self._connect_timeout, read),
                body=lambda: src.body(filename),
                ok=(200, 201, 202),
            )
            response = self._send(call)
        finally:
            src.close()
        info = parse_upload(self._json(response, "upload", allow_empty=True), relative)
        if info.name != relative and relative.endswith("/" + info.name):
            info = type(info)(relative, info.size, info.modified, info.type, info.content_type)
        return info

    def iter_download(self, name: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """Stream a file's bytes. The name is checked now; the request starts on the first ``next()``.
        :class:`NotARegularFileError` (with the service's reason) for a link, FIFO or socket."""
        return self._stream_content(normalize_name(name), chunk_size)

    def _stream_content(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        op = self._dialect.download(quote_path(relative))
        with self._send(_Call(op, "download", target=relative, stream=True)) as response:
            expected = response.headers.get("Content-Length")
            encoded = response.headers.get("Content-Encoding")
            received = 0
            try:
                for chunk in response.iter_content(chunk_size=chunk_size):
                    received += len(chunk)
                    yield chunk
            except requests.RequestException as exc:
                raise ServiceResponseError(f"download {relative!r} was interrupted: {exc}") from exc
            if expected and not encoded and expected.isdigit() and int(expected) != received:
                raise ServiceResponseError(f"download {relative!r} was truncated: {received} of {expected} bytes")

    def download(self, name: str, dest: str | os.PathLike[str] | BinaryIO) -> int:
        """Stream a file to ``dest`` (a path, written atomically, or a binary file object); returns bytes written."""
        chunks = self.iter_download(name)
        if hasattr(dest, "write"):
            return sum(dest.write(chunk) or len(chunk) for chunk in chunks)  # type: ignore[union-attr]
        target = os.fspath(dest)  # type: ignore[arg-type]
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as fh:
                written = sum(fh.write(chunk) for chunk in chunks)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return written

    def read_bytes(self, name: str) -> bytes:
        """A file's whole content (for small files; prefer :meth:`download` for large ones)."""
        return b"".join(self.iter_download(name))

    def list_files(self) -> list[FileInfo]:
        """The files in the session's ``/mnt/data``."""
        response = self._send(_Call(self._dialect.list_files(), "list files"))
        return parse_file_list(self._json(response, "list files"))

    def file_info(self, name: str) -> FileInfo:
        """Metadata of one file; :class:`NotFoundError` when it does not exist."""
        relative = normalize_name(name)
        op = self._dialect.file_info(quote_path(relative))
        if op is None:
            for info in self.list_files():
                if info.name == relative:
                    return info
            raise error_from_response(404, {}, None, operation="file info", target=relative)
        response = self._send(_Call(op, "file info", target=relative))
        return parse_file_info(self._json(response, "file info"), relative)

    def delete_file(self, name: str) -> None:
        """Delete a file. :class:`NotFoundError` when it does not exist (tolerated after a retried attempt)."""
        relative = normalize_name(name)
        op = self._dialect.delete_file(quote_path(relative))
        call = _Call(op, "delete file", target=relative, ok=(200, 202, 204), ok_404_on_retry=True)
        self._send(call).close()

    # ------------------------------------------------------------------ session

    def get_session(self) -> SessionInfo:
        """The session's metadata (uses the 2025-02-02-preview ``session`` route on older api-versions)."""
        response = self._send(_Call(self._dialect.get_session(), "get session"))
        return parse_session(self._json(response, "get session"), self._identifier)

    def delete_session(self) -> None:
        """Delete the session (its variables and files). A session that does not exist counts as deleted."""
        self._send(self._delete_call()).close()

    def end(self) -> None:
        """Delete the session and close the client. No other call starts or retries from the moment this is called,
        so a call still running in another thread cannot bring the session back (an identifier's first use creates
        its session)."""
        self._closed = True
        try:
            self._send(self._delete_call(), closing=True).close()
        finally:
            self._http.close()

    def _delete_call(self) -> _Call:
        return _Call(self._dialect.delete_session(), "delete session", ok=(200, 202, 204, 404))

    # ------------------------------------------------------------------ transport

    def _url(self, op: Operation) -> str:
        query = self._query if op.api_version is None else self._build_query(op.api_version)
        if op.params:
            query = f"{query}&{urlencode(op.params)}"
        return f"{self._pool.url}/{op.path}?{query}"

    def _send(self, call: _Call, *, closing: bool = False) -> requests.Response:
        """Send ``call`` until a reply it accepts, or until the retry policy gives up: then raise its error.
        ``closing``: the call of `end`, the one call sent once the client is closed."""
        url = self._url(call.op)
        payload = json.dumps(call.op.body).encode() if call.op.body is not None else None
        attempt, renewed = 1, False
        while True:
            if self._closed and not closing:  # checked before every attempt: a retry must not outlive close()
                raise SessionsError("this SessionsClient is closed; create a new one")
            try:
                response = self._attempt(call, url, payload)
            except requests.RequestException as exc:
                delay = self._retry.delay_after_failure(attempt, exc, idempotent=call.idempotent)
                if delay is None:
                    raise self._transport_error(exc, call) from exc
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status in call.ok or (status == 404 and call.ok_404_on_retry and attempt > 1):
                    return response
                if status == 401 and not renewed and call.resendable and self._auth.renew(response):
                    response.close()
                    renewed = True  # one new token per call, not counted as a policy attempt
                    _log.debug("%s: the service refused the token (HTTP 401); sending again with a new one", call.name)
                    continue
                delay = self._retry.delay_after_reply(attempt, status, response.headers, idempotent=call.idempotent)
                if delay is not None and says_pool_full(status, response.headers, response.content, call.name):
                    delay = None  # a slot frees in minutes, not seconds: say so instead of asking again
                if delay is None:
                    raise self._error_reply(response, call)
                response.close()
                reason = f"HTTP {status}"
            attempts = self._retry.attempts
            _log.debug(
                "%s: attempt %d of %d failed (%s); again in %.2f s", call.name, attempt, attempts, reason, delay
            )
            self._retry.sleep(delay)
            attempt += 1

    def _attempt(self, call: _Call, url: str, payload: bytes | None) -> requests.Response:
        """One request for ``call``: a fresh body, the bearer token, the call's timeouts."""
        headers = call.headers
        data: Any = payload
        if call.body is not None:
            data = call.body()
            headers = {"Content-Type": data.content_type}
        elif headers is None and payload is not None:
            headers = _JSON_HEADERS
        try:
            return self._http.request(
                call.op.method,
                url,
                data=data,
                headers=headers,
                auth=self._auth,
                timeout=call.timeout or self._timeout,
                stream=call.stream,
            )
        except requests.exceptions.SSLError as exc:
            raise ServiceRequestError(
                f"{call.name}: the TLS handshake with {self._pool.host} failed ({exc}). Check the endpoint's "
                "certificate, or set REQUESTS_CA_BUNDLE for a private CA."
            ) from exc

    @staticmethod
    def _error_reply(response: requests.Response, call: _Call) -> SessionsError:
        body = response.content
        response.close()
        return error_from_response(
            response.status_code, response.headers, body, operation=call.name, target=call.target
        )

    def _transport_error(self, exc: requests.RequestException, call: _Call) -> SessionsError:
        host = self._pool.host
        if is_connect_failure(exc):
            return ServiceRequestError(
                f"{call.name}: could not connect to {host} ({type(exc).__name__}). Check the pool endpoint, "
                "DNS, proxy and firewall settings, and that the service (or local emulator) is running."
            )
        maybe_ran = "" if call.idempotent else " The code may or may not have run; it was not sent again."
        if isinstance(exc, requests.exceptions.Timeout):
            return ServiceResponseError(
                f"{call.name}: no reply from {host} in time ({type(exc).__name__}).{maybe_ran}"
                + (" Raise the timeout if the work is expected to be slow." if call.idempotent else "")
            )
        return ServiceResponseError(f"{call.name}: the connection to {host} failed after sending ({exc}).{maybe_ran}")

    @staticmethod
    def _json(response: requests.Response, operation: str, *, allow_empty: bool = False) -> Any:
        if allow_empty and not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceResponseError(
                f"{operation}: the reply was not JSON (HTTP {response.status_code}): {response.text[:200]!r}",
                status_code=response.status_code,
            ) from exc
