"""`Gate`: the ASGI middleware in front of Gradio's routes, for what Gradio leaves open to anyone.

- **Uploads** (`POST …/gradio_api/upload`) need a live page of this playground: its pages send their session's
  upload ticket in a header (`TICKET_HEADER`, added by `TICKET_SCRIPT` to the page's own upload requests: a header,
  not a cookie, since a Space runs in a cross-site iframe where cookies are not sent). Each upload is counted
  against that session's quota, recorded so the file is deleted once used (or with the session), and a request
  that does not complete leaves no partial file behind.
- **Event bodies** (`queue/join`, `run/predict`) are refused past `MAX_EVENT_BODY` bytes.
- **Downloads** (`GET …/playground/file/<token>`) stream a file of a session's `/mnt/data`, or all of it as a zip,
  straight from the sandbox: the server keeps no copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from playground.formatting import human_size
from playground.uploads import sweep_partial_uploads
from playground.visitors import Rate

log = logging.getLogger(__name__)

TICKET_HEADER = "x-playground-ticket"
MAX_EVENT_BODY = 32 * 1024 * 1024
UPLOADS_PER_MINUTE = 60
ZIP_CHUNK = 256 * 1024
_UPLOAD = re.compile(r"/gradio_api/upload/?$")
_EVENT = re.compile(r"/gradio_api/(queue/join|run/predict|call/[^/]+)/?$")
_FILE = re.compile(r"/playground/file/([A-Za-z0-9_-]{32})$")

TICKET_SCRIPT = """<script>
(() => {
  const fetchOriginal = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input.url, window.location.href);
    if (window.__playgroundTicket && /\\/gradio_api\\/upload\\/?$/.test(url.pathname)) {
      const headers = new Headers((init && init.headers) || (typeof input === 'string' ? {} : input.headers));
      headers.set('TICKET_HEADER', window.__playgroundTicket);
      init = {...(init || {}), headers};
    }
    return fetchOriginal(input, init);
  };
})();
</script>""".replace("TICKET_HEADER", TICKET_HEADER)
"""Added to the page's <head>: the page's uploads carry its session's ticket (set by SET_TICKET_JS at load)."""

SET_TICKET_JS = "(ticket) => { window.__playgroundTicket = ticket || null; }"


class Gate:
    """ASGI middleware; `registry` is the app's `BrowserSessions`."""

    def __init__(self, app: Any, registry: Any) -> None:
        self.app, self.registry = app, registry
        self.settings = registry.settings
        self.upload_rate = Rate(UPLOADS_PER_MINUTE)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method == "POST" and _UPLOAD.search(path):
            await self._upload(scope, receive, send)
        elif method == "POST" and _EVENT.search(path):
            await self._limited(scope, receive, send, MAX_EVENT_BODY, "This request is too large.")
        elif method in ("GET", "HEAD") and (found := _FILE.search(path)):
            await self._download(found.group(1), scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ---- uploads ------------------------------------------------------------------------------------------------
    async def _upload(self, scope: dict, receive: Any, send: Any) -> None:
        headers = _headers(scope)
        session = self.registry.by_ticket(headers.get(TICKET_HEADER))
        if session is None or session.orphaned_at is not None:
            await _refuse(scope, receive, send, 403, "Uploads need an open page of this playground: reload the page.")
            return
        if self.upload_rate.wait_needed(session.digest):
            await _refuse(scope, receive, send, 429, "Too many uploads in the last minute: wait a moment.")
            return
        room = self.settings.upload_quota_bytes - self.registry.uploads.held_by(session.digest)
        declared = int(headers.get("content-length") or 0)
        if declared > room:
            await _refuse(scope, receive, send, 413, _over_quota(self.settings.upload_quota_bytes))
            return
        sent = await self._limited(scope, receive, send, room, _over_quota(self.settings.upload_quota_bytes))
        if sent.status == 200 and sent.body:
            try:
                paths = [str(p) for p in json.loads(sent.body)]
            except ValueError:
                paths = []
            self.registry.uploads.record(session.digest, paths)
        elif sent.status != 200:
            self._sweep_soon()

    def _sweep_soon(self) -> None:
        """A failed or abandoned upload may leave Gradio's partial file behind: sweep once it is closed."""
        root = self.registry.scratch_root
        if root is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(2.0, lambda: loop.run_in_executor(None, sweep_partial_uploads, root))

    # ---- a body size limit --------------------------------------------------------------------------------------
    async def _limited(self, scope: dict, receive: Any, send: Any, limit: int, refusal: str) -> _Sent:
        """Pass the request on, cutting it off (413 `refusal`) once its body exceeds `limit` bytes."""
        if int(_headers(scope).get("content-length") or 0) > limit:
            await _refuse(scope, receive, send, 413, refusal)
            return _Sent(413)
        received, over = 0, False

        async def counted() -> dict:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        sent = _Sent()

        async def recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent.status = message["status"]
            elif message["type"] == "http.response.body" and sent.status == 200 and len(sent.body) < 1 << 20:
                sent.body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, counted, recording)
        except ClientDisconnect:
            log.info("request to %s ended early (%s)", scope.get("path"), "over its limit" if over else "aborted")
        if over and sent.status == 0:
            await PlainTextResponse(refusal, status_code=413)(scope, receive, send)
            sent.status = 413
        elif sent.status == 0:
            sent.status = 499  # the client went away: nothing was stored
        return sent

    # ---- downloads ----------------------------------------------------------------------------------------------
    async def _download(self, token: str, scope: dict, receive: Any, send: Any) -> None:
        found = self.registry.follow_link(token)
        executor = found[0].store.current if found else None
        if found is None or executor is None:
            await _refuse(scope, receive, send, 404, "This download link has expired: select the file again.")
            return
        _, link = found
        if link.name is None:
            name, body = f"mnt-data-{found[0].short_id}.zip", _zip_stream(executor, list(link.names))
            media = "application/zip"
        else:
            name, body = link.name.rsplit("/", 1)[-1], executor.client.iter_download(link.name)
            media = "application/octet-stream"
        disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
        headers = {"Content-Disposition": disposition, "Cache-Control": "no-store"}
        if scope.get("method") == "HEAD":
            await Response(status_code=200, headers=headers, media_type=media)(scope, receive, send)
            return
        await StreamingResponse(body, headers=headers, media_type=media)(scope, receive, send)


class _Sent:
    def __init__(self, status: int = 0) -> None:
        self.status, self.body = status, b""


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _refuse(scope: dict, receive: Any, send: Any, status: int, text: str) -> None:
    await PlainTextResponse(text, status_code=status)(scope, receive, send)


def _over_quota(quota: int) -> str:
    return (
        f"Uploads waiting on the server are limited to {human_size(quota)} per session: send the files already "
        "uploaded first, then upload more."
    )


class _Chunks:
    """A write-only, unseekable stream that collects what is written (zipfile writes data descriptors to it)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts, self.size = b"".join(self.parts), [], 0
        return data


def _zip_stream(executor: Any, names: list[str]) -> Iterator[bytes]:
    """Every named file of /mnt/data, zipped as it streams from the sandbox (deflate level 1: zlib works outside the
    GIL, and quickly)."""
    out = _Chunks()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:  # type: ignore[arg-type]
        for name in names:
            with archive.open(name, "w", force_zip64=True) as member:
                for chunk in executor.client.iter_download(name):
                    member.write(chunk)
                    if out.size >= ZIP_CHUNK:
                        yield out.take()
    yield out.take()
