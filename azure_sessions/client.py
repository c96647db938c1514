"""SessionsClient: one session of an Azure Container Apps dynamic-sessions pool, over one HTTP connection pool."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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
)
from .models import MAX_EXECUTION_SECONDS, ExecutionResult, FileInfo, SessionInfo
from .names import normalize_name, quote_name
from .retry import RETRY_STATUSES, RetryPolicy, is_connect_failure
from .uploads import UploadSource

EXECUTE_READ_MARGIN_SECONDS = 30.0
"""Added to an execution's own timeout to get the HTTP read timeout."""
UPLOAD_MIN_READ_TIMEOUT = 120.0
_POLL_INTERVAL = 0.5
_JSON_HEADERS = {"Content-Type": "application/json"}
_PENDING = frozenset({"Running", "NotStarted"})
_INTERRUPT = Operation("POST", ".emulator/interrupt")
"""The local emulator's extension route; the service itself has no way to interrupt an execution."""
_NO_INTERRUPT = (
    "This session pool cannot interrupt a running execution: the code runs until it finishes or reaches its "
    "timeout. Delete the session to end it now (its variables and files are lost)."
)


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
        self._endpoint = self._pool.url
        self._identifier = identifier or str(uuid.uuid4())
        self._query = self._build_query(api_version)
        self._tokens = TokenProvider(credential, scope=scope, managed_identity_client_id=managed_identity_client_id)
        self._auth = BearerAuth(self._tokens)
        self._connect_timeout = connect_timeout
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry or RetryPolicy()
        self._closed = False
        self._interruptible: bool | None = False if self._pool.is_azure else None
        self._http = requests.Session()
        # Read proxy and CA settings from the environment once, not on every call (requests' trust_env scans
        # os.environ per request); ~/.netrc is never consulted since every request carries our own auth.
        self._http.trust_env = False
        self._http.proxies = requests.utils.get_environ_proxies(self._endpoint)
        self._http.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        agent = (
            f"azure-sessions-python/{__version__} Python/{platform.python_version()} requests/{requests.__version__}"
        )
        self._http.headers.update({"User-Agent": f"{user_agent} {agent}" if user_agent else agent})

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
            f"SessionsClient(endpoint={self._endpoint!r}, identifier={short!r}, "
            f"api_version={self.api_version!r}, credential={self._tokens.kind!r})"
        )

    @property
    def endpoint(self) -> str:
        """The pool management endpoint (without trailing slash)."""
        return self._endpoint

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

    def execute(self, code: str, *, timeout: float = 60.0) -> ExecutionResult:
        """Run ``code`` in the session and return its :class:`ExecutionResult`.

        An exception in the code is reported in the result (``status == "Failed"``), not raised. Never sent twice:
        retried only when the request provably never reached the service, or after a 429.

        :param timeout: the execution's time limit in seconds (capped at 220 by the service).
        :raises SessionsError: transport or service failure (see :mod:`azure_sessions.errors`).
        """
        op = self._dialect.execute(code, timeout)
        read = min(float(timeout), MAX_EXECUTION_SECONDS) + EXECUTE_READ_MARGIN_SECONDS
        # One operation-id per logical execution, the same on every attempt: a service that already ran it
        # answers with that execution instead of running the code again.
        headers = {**_JSON_HEADERS, "operation-id": str(uuid.uuid4())}
        response = self._send(
            op, "execute", idempotent=False, timeout=(self._connect_timeout, read), ok=(200, 202), headers=headers
        )
        result = parse_execution(self._json(response, "execute"), response.headers.get("x-ms-session-guid"))
        if result.status in _PENDING and result.execution_id:
            result = self._poll(result, deadline=time.monotonic() + read)
        return result

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
            response = self._send(_INTERRUPT, "interrupt", idempotent=True)
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
            response = self._send(op, "get execution", target=result.execution_id)
            result = parse_execution(self._json(response, "get execution"), result.session_guid)
        return result

    # ------------------------------------------------------------------ files

    def upload(self, source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> FileInfo:
        """Upload a file (path or binary file object, streamed from its current position) to ``/mnt/data``.

        :param name: name in ``/mnt/data`` (a leading ``/mnt/data/`` is stripped); default the source's basename.
        :raises FileTooLargeError: above 128 MiB (checked before sending when the size is known).
        :raises InvalidFileNameError: refused name (nothing sent).
        """
        if name is not None:
            normalize_name(name)  # refuse a bad name before touching the file
        src = UploadSource(source)
        try:
            if name is None and not src.default_name:
                raise ValueError("name= is required when uploading a file object without a name")
            relative = normalize_name(name if name is not None else src.default_name or "")
            op, filename = self._dialect.upload(relative)
            read = max(self._timeout[1], UPLOAD_MIN_READ_TIMEOUT)
            response = self._send(
                op,
                "upload",
                target=relative,
                idempotent=src.rewindable,
                timeout=(self._connect_timeout, read),
                body_factory=lambda: src.body(filename),
                ok=(200, 201, 202),
            )
        finally:
            src.close()
        info = parse_upload(self._json(response, "upload", allow_empty=True), relative)
        if info.name != relative and relative.endswith("/" + info.name):
            info = type(info)(relative, info.size, info.modified, info.type, info.content_type)
        return info

    def iter_download(self, name: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """Stream a file's bytes. The name is checked now; the request starts on the first ``next()``."""
        quoted = quote_name(name)
        return self._stream_content(quoted, normalize_name(name), chunk_size)

    def _stream_content(self, quoted: str, relative: str, chunk_size: int) -> Iterator[bytes]:
        op = self._dialect.download(quoted)
        with self._send(op, "download", target=relative, stream=True) as response:
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
        response = self._send(self._dialect.list_files(), "list files")
        return parse_file_list(self._json(response, "list files"))

    def file_info(self, name: str) -> FileInfo:
        """Metadata of one file; :class:`NotFoundError` when it does not exist."""
        quoted = quote_name(name)
        relative = normalize_name(name)
        op = self._dialect.file_info(quoted)
        if op is None:
            for info in self.list_files():
                if info.name == relative:
                    return info
            raise error_from_response(404, {}, None, operation="file info", target=relative)
        response = self._send(op, "file info", target=relative)
        return parse_file_info(self._json(response, "file info"), relative)

    def delete_file(self, name: str) -> None:
        """Delete a file. :class:`NotFoundError` when it does not exist (tolerated after a retried attempt)."""
        quoted = quote_name(name)
        op = self._dialect.delete_file(quoted)
        self._send(op, "delete file", target=normalize_name(name), ok=(200, 202, 204), ok_404_on_retry=True).close()

    # ------------------------------------------------------------------ session

    def get_session(self) -> SessionInfo:
        """The session's metadata (uses the 2025-02-02-preview ``session`` route on older api-versions)."""
        response = self._send(self._dialect.get_session(), "get session")
        return parse_session(self._json(response, "get session"), self._identifier)

    def delete_session(self) -> None:
        """Delete the session (its variables and files). A session that does not exist counts as deleted."""
        self._send(self._dialect.delete_session(), "delete session", ok=(200, 202, 204, 404)).close()

    # ------------------------------------------------------------------ transport

    def _url(self, op: Operation) -> str:
        query = self._query if op.api_version is None else self._build_query(op.api_version)
        if op.params:
            query = f"{query}&{urlencode(op.params)}"
        return f"{self._endpoint}/{op.path}?{query}"

    def _send(
        self,
        op: Operation,
        operation: str,
        *,
        target: str | None = None,
        idempotent: bool = True,
        timeout: tuple[float, float] | None = None,
        stream: bool = False,
        body_factory: Callable[[], Any] | None = None,
        ok: tuple[int, ...] = (200,),
        ok_404_on_retry: bool = False,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        if self._closed:
            raise SessionsError("this SessionsClient is closed; create a new one")
        url = self._url(op)
        payload = json.dumps(op.body).encode() if op.body is not None else None
        if headers is None and payload is not None:
            headers = _JSON_HEADERS
        policy = self._retry
        attempt = 0
        auth_retried = False
        while True:
            attempt += 1
            data = payload
            if body_factory is not None:
                data = body_factory()
                headers = {"Content-Type": data.content_type}
            try:
                response = self._http.request(
                    op.method,
                    url,
                    data=data,
                    headers=headers,
                    auth=self._auth,
                    timeout=timeout or self._timeout,
                    stream=stream,
                )
            except requests.exceptions.SSLError as exc:
                raise ServiceRequestError(
                    f"{operation}: the TLS handshake with {self._pool.host} failed ({exc}). Check the "
                    "endpoint's certificate, or set REQUESTS_CA_BUNDLE for a private CA."
                ) from exc
            except requests.RequestException as exc:
                connect = is_connect_failure(exc)
                if (connect or idempotent) and attempt < policy.attempts:
                    policy.sleep(policy.backoff(attempt))
                    continue
                raise self._transport_error(exc, operation, connect, idempotent) from exc
            status = response.status_code
            if status in ok or (status == 404 and ok_404_on_retry and attempt > 1):
                return response
            if status == 401 and not auth_retried and (body_factory is None or idempotent):
                if self._auth.renew(response):
                    auth_retried = True
                    attempt -= 1  # the refresh retry is not a policy attempt
                    continue
            if status in RETRY_STATUSES and (idempotent or status == 429) and attempt < policy.attempts:
                delay = policy.delay(attempt, response.headers)
                response.close()
                policy.sleep(delay)
                continue
            body = response.content
            response.close()
            raise error_from_response(status, response.headers, body, operation=operation, target=target)

    def _transport_error(
        self, exc: requests.RequestException, operation: str, connect: bool, idempotent: bool
    ) -> SessionsError:
        host = self._pool.host
        if connect:
            return ServiceRequestError(
                f"{operation}: could not connect to {host} ({type(exc).__name__}). Check the pool endpoint, "
                "DNS, proxy and firewall settings, and that the service (or local emulator) is running."
            )
        maybe_ran = "" if idempotent else " The code may or may not have run; it was not sent again."
        if isinstance(exc, requests.exceptions.Timeout):
            return ServiceResponseError(
                f"{operation}: no reply from {host} in time ({type(exc).__name__}).{maybe_ran}"
                + (" Raise the timeout if the work is expected to be slow." if idempotent else "")
            )
        return ServiceResponseError(f"{operation}: the connection to {host} failed after sending ({exc}).{maybe_ran}")

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
