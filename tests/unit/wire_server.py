"""A scripted HTTP server on loopback: each test queues replies and inspects the requests it received."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

POOL_PATH = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/sessionPools/test-pool"


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str  # relative to the pool endpoint, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def unquoted_path(self) -> str:
        return unquote(self.path)


@dataclass
class Reply:
    """A scripted reply. ``drop`` closes the connection after reading the request, without answering."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    declared_length: int | None = None  # announce this Content-Length, send the body, then hang up

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.json is not None:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
            return json.dumps(self.json).encode(), headers
        return self.body, headers


Responder = Callable[[Received], Reply]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the tests


class ScriptedServer:
    """Serve queued :class:`Reply` objects (or a responder function) in order; record every request."""

    def __init__(self) -> None:
        self.replies: deque[Reply | Responder] = deque()
        self.requests: list[Received] = []
        self.fallback: Responder | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                path = parts.path[len(POOL_PATH) + 1 :] if parts.path.startswith(POOL_PATH) else parts.path
                received = Received(
                    method=self.command,
                    path=path,
                    query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self._read_body(),
                )
                reply = server._next(received)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body, headers = reply.encode()
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(reply.declared_length or len(body)))
                self.end_headers()
                self.wfile.write(body)
                if reply.declared_length is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}{POOL_PATH}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            item = self.replies.popleft() if self.replies else self.fallback
        if item is None:
            return Reply(500, json={"error": {"code": "NoScriptedReply", "message": "the test queued no reply"}})
        return item(received) if callable(item) else item

    def queue(self, *replies: Reply | Responder) -> None:
        self.replies.extend(replies)

    def reply(self, status: int = 200, json: Any = None, **kwargs: Any) -> None:
        self.replies.append(Reply(status, json, **kwargs))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
