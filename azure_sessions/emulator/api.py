"""HTTP routes for both API dialects: parse the request, call the pool, shape the reply. Nothing else."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import errors, files, wire
from .auth import check_bearer
from .faults import FaultInjector, FaultMiddleware, parse_rules
from .multipart import MultipartFile
from .sessions import EmulatedPool, validate_identifier

POOL_PREFIX = "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/sessionPools/{pool_name}"
POOL_PATH = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/sessionPools/[^/]+")
CHUNK = 256 * 1024
MAX_EXECUTE_BODY = 16 * 1024 * 1024


@dataclass
class AppState:
    pool: EmulatedPool
    token: str | None
    faults: FaultInjector
    staging_dir: Path
    info: dict[str, Any]
    upload_limit: int = files.MAX_UPLOAD_BYTES


def create_app(state: AppState) -> Any:
    """The ASGI application: FastAPI routes wrapped in the fault-injection middleware."""
    app = FastAPI(title="Azure Container Apps dynamic sessions emulator", openapi_url=None, docs_url=None,
                  redoc_url=None)  # fmt: skip
    limiter = anyio.CapacityLimiter(256)
    pool = state.pool

    async def blocking(func: Callable, *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs), limiter=limiter)

    @app.exception_handler(errors.EmulatorError)
    async def on_emulator_error(request: Request, exc: errors.EmulatorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(errors.not_found(f"No operation matches {request.method} {request.url.path}."))
        code = {405: "MethodNotAllowed"}.get(exc.status_code, f"Http{exc.status_code}")
        return error_response(errors.EmulatorError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(errors.bad_request(f"Invalid request: {exc.errors()}"))

    def authorize(request: Request) -> None:
        check_bearer(request.headers.get("authorization", ""), state.token)

    def context(request: Request, need_identifier: bool = True) -> tuple[str, str]:
        authorize(request)
        version = wire.check_version(request.query_params.get("api-version"))
        identifier = request.query_params.get("identifier", "")
        if need_identifier:
            validate_identifier(identifier)
        return version, identifier

    def output_limit(version: str, requested: int | None) -> int | None:
        return requested if requested is not None else (4096 if version == "2025-10-02-preview" else None)

    router = APIRouter(prefix=POOL_PREFIX)

    # -- executions ------------------------------------------------------------------------------------------------
    async def run_execution(request: Request) -> tuple[str, Any, dict]:
        version, identifier = context(request)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_EXECUTE_BODY:
                raise errors.EmulatorError(
                    413, "RequestTooLarge", f"The execution request exceeds {MAX_EXECUTE_BODY // 2**20} MiB."
                )
        try:
            body = json.loads(bytes(raw) or b"null")
        except ValueError:
            raise errors.bad_request("The request body is not valid JSON.", "InvalidRequestBody") from None
        req = wire.parse_execution_request(body)
        record = await blocking(
            pool.execute,
            identifier,
            req["code"],
            timeout=req["timeout"],
            execution_type=req["execution_type"],
            execution_id=request.headers.get("operation-id") or None,
            wait=not req["asynchronous"],
            output_max_length=output_limit(version, req["output_max_length"]),
        )
        return version, record, req

    @router.post("/code/execute")
    async def execute_envelope(request: Request) -> Response:
        _, record, _ = await run_execution(request)
        if not record.done.is_set():
            await blocking(record.done.wait)
        body = wire.envelope_execution(record, record.output_max_length)
        return JSONResponse(body, 200, headers=wire.execution_headers(record))

    @router.post("/executions")
    async def execute_resource(request: Request) -> Response:
        version, record, req = await run_execution(request)
        body = wire.resource_execution(record, record.output_max_length)
        if req["asynchronous"]:
            location = (
                f"{str(request.url).split('?')[0]}/{quote(record.id, safe='')}"
                f"?api-version={version}&identifier={quote(record.identifier, safe='')}"
            )
            headers = {"operation-id": record.id, "Operation-Location": location}
            return JSONResponse(body, wire.execute_status_code(version, True), headers=headers)
        return JSONResponse(body, wire.execute_status_code(version), headers=wire.execution_headers(record))

    @router.get("/executions/{execution_id}")
    async def get_execution(request: Request, execution_id: str) -> Response:
        _, identifier = context(request)
        record = await blocking(pool.get_execution, identifier, execution_id)
        body = wire.resource_execution(record, record.output_max_length)
        return JSONResponse(body, 200, headers=wire.execution_headers(record) if record.done.is_set() else {})

    # -- files -----------------------------------------------------------------------------------------------------
    async def receive_upload(request: Request, directory: str | None) -> files.FileEntry:
        _, identifier = context(request)
        _, root, uid = await blocking(pool.session_dir, identifier)
        target: list[list[str]] = []

        def open_upload(filename: str) -> files.Upload:
            target.append(files.split_path(filename, directory))
            return files.Upload(state.staging_dir, state.upload_limit)

        receiver = MultipartFile(request.headers.get("content-type"), open_upload)
        failure: errors.EmulatorError | None = None
        try:
            async for chunk in request.stream():
                if failure is None:
                    try:
                        receiver.feed(chunk)
                    except errors.EmulatorError as exc:
                        failure = exc  # keep reading so the client gets the answer instead of a broken pipe
                    if receiver.upload is not None and receiver.upload.too_large:
                        failure = errors.payload_too_large(state.upload_limit)
            if failure is not None:
                raise failure
            upload = receiver.finish()
            return await blocking(upload.publish, root, target[0], uid)
        finally:
            if receiver.upload is not None:
                receiver.upload.discard()

    @router.post("/files/upload")
    async def upload_envelope(request: Request) -> Response:
        entry = await receive_upload(request, request.query_params.get("path"))
        return JSONResponse(_envelope_upload(entry), 200)

    @router.post("/files")
    async def upload_resource(request: Request) -> Response:
        entry = await receive_upload(request, request.query_params.get("path"))
        version = request.query_params["api-version"]
        if wire.is_envelope(version):
            return JSONResponse(_envelope_upload(entry), 200)
        return JSONResponse(wire.resource_upload(entry, version), 200)

    @router.get("/files")
    async def list_files(request: Request) -> Response:
        version, identifier = context(request)
        parts = files.split_path(None, request.query_params.get("path"), allow_root=True)
        recursive = request.query_params.get("recursive", "").lower() == "true"
        _, root, _ = await blocking(pool.session_dir, identifier)
        entries = await blocking(files.list_dir, root, parts, recursive)
        if wire.is_envelope(version):
            return JSONResponse(wire.envelope_file_list(entries), 200)
        return JSONResponse(wire.resource_file_list(entries, version), 200)

    @router.get("/files/{rest:path}")
    async def get_file(request: Request, rest: str) -> Response:
        version, identifier = context(request)
        envelope = wire.is_envelope(version)
        directory = request.query_params.get("path")
        if envelope and rest.startswith("content/"):
            return await download(identifier, files.split_path(rest[len("content/") :], directory))
        if rest.endswith("/content") and rest != "/content":
            return await download(identifier, files.split_path(rest[: -len("/content")], directory))
        parts = files.split_path(rest, directory)
        _, root, _ = await blocking(pool.session_dir, identifier)
        entry = await blocking(files.stat_file, root, parts)
        if envelope:
            return JSONResponse(wire.envelope_file_list([entry]), 200)
        return JSONResponse(wire.resource_file(entry, version, listing=False), 200)

    async def download(identifier: str, parts: list[str]) -> Response:
        _, root, _ = await blocking(pool.session_dir, identifier)
        fd, entry = await blocking(files.open_for_read, root, parts)
        headers = {"Content-Length": str(entry.size)}
        return StreamingResponse(_read_fd(fd, entry.size), 200, headers, media_type="application/octet-stream")

    @router.delete("/files/{rest:path}")
    async def delete_file(request: Request, rest: str) -> Response:
        version, identifier = context(request)
        parts = files.split_path(rest, request.query_params.get("path"))
        _, root, _ = await blocking(pool.session_dir, identifier)
        await blocking(files.delete, root, parts)
        if wire.is_envelope(version):
            return JSONResponse({"message": "file deleted successfully"}, 200)
        return Response(status_code=204)

    # -- sessions and pool -----------------------------------------------------------------------------------------
    @router.get("/session")
    async def get_session(request: Request) -> Response:
        _, identifier = context(request)
        session = await blocking(pool.get_session, identifier)
        return JSONResponse(wire.session_body(session), 200)

    @router.delete("/session")
    async def delete_session(request: Request) -> Response:
        _, identifier = context(request)
        await blocking(pool.delete_session, identifier)
        return Response(status_code=204)

    @router.post("/.management/stopSession")
    async def stop_session(request: Request, pool_name: str) -> Response:
        _, identifier = context(request)
        await blocking(pool.delete_session, identifier)
        return PlainTextResponse(f"Session {identifier} in session pool {pool_name} stopped.", 200)

    @router.get("/listSessions")
    async def list_sessions(request: Request) -> Response:
        context(request, need_identifier=False)
        try:
            skip = max(0, int(request.query_params.get("skip", "0")))
        except ValueError:
            raise errors.bad_request("skip must be a non-negative integer.") from None
        sessions = pool.list_sessions()[skip:]
        return JSONResponse({"sessions": [wire.session_body(s) for s in sessions]}, 200)

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        context(request, need_identifier=False)
        return JSONResponse(await blocking(_metadata, state.info.get("startedAt", "")), 200)

    # -- emulator administration (token-protected like everything else) -------------------------------------------
    @router.get("/.emulator/info")
    async def admin_info(request: Request) -> Response:
        authorize(request)
        return JSONResponse(state.info | {"stats": pool.stats()}, 200)

    @router.get("/.emulator/faults")
    async def admin_faults(request: Request) -> Response:
        authorize(request)
        return JSONResponse(state.faults.snapshot(), 200)

    @router.api_route("/.emulator/faults", methods=["PUT", "POST"])
    async def admin_set_faults(request: Request) -> Response:
        authorize(request)
        try:
            body = json.loads(await request.body() or b"{}")
            specs = body.get("rules", []) if isinstance(body, dict) else body
            rules = parse_rules(specs if isinstance(specs, list) else str(specs))
        except (ValueError, TypeError) as exc:
            raise errors.bad_request(f"Invalid fault rules: {exc}", "InvalidFaultRules") from None
        if request.method == "PUT":
            state.faults.set_rules(rules, seed=body.get("seed") if isinstance(body, dict) else None)
        else:
            state.faults.add_rules(rules)
        return JSONResponse(state.faults.snapshot(), 200)

    @router.delete("/.emulator/faults")
    async def admin_clear_faults(request: Request) -> Response:
        authorize(request)
        state.faults.clear()
        return Response(status_code=204)

    @router.post("/.emulator/expire")
    async def admin_expire(request: Request) -> Response:
        authorize(request)
        identifier = request.query_params.get("identifier")
        if not identifier and request.query_params.get("all", "").lower() != "true":
            raise errors.bad_request("Pass identifier=<id>, or all=true to expire every session.")
        expired = await blocking(pool.expire, identifier or None)
        return JSONResponse({"expired": expired}, 200)

    @router.post("/.emulator/interrupt")
    async def admin_interrupt(request: Request) -> Response:
        _, identifier = context(request)
        if not pool.interruptible:
            raise errors.not_found(f"No operation matches {request.method} {request.url.path}.")
        interrupted = await blocking(pool.interrupt, identifier)
        return JSONResponse({"interrupted": interrupted}, 200)

    @router.get("/.emulator/executions")
    async def admin_executions(request: Request) -> Response:
        authorize(request)
        identifier = request.query_params.get("identifier")
        entries = [e for e in list(pool.execution_log) if not identifier or e["identifier"] == identifier]
        return JSONResponse({"total": pool.execution_count(), "count": len(entries), "executions": entries}, 200)

    app.include_router(router)
    return VersionHeader(FaultMiddleware(app, state.faults, POOL_PATH, pool.expire))


class VersionHeader:
    """Adds ``api-supported-versions`` to every response, like the service."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"api-supported-versions", wire.SUPPORTED_HEADER.encode())]  # fmt: skip
            await send(message)

        return await self.app(scope, receive, send_with_header)


def error_response(exc: errors.EmulatorError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers={"x-ms-error-code": exc.code, **exc.headers})


def _envelope_upload(entry: files.FileEntry) -> dict[str, Any]:
    return {
        "$id": "1",
        "value": [
            {
                "$id": "2",
                "properties": {
                    "$id": "3",
                    "filename": entry.path,
                    "size": entry.size,
                    "lastModifiedTime": files.iso_time(entry.modified),
                },
            }
        ],
    }


def _read_fd(fd: int, size: int) -> Iterator[bytes]:
    try:
        left = size
        while left > 0:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def _packages() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(name, dist.version)
    return tuple(sorted(found.items(), key=lambda item: item[0].lower()))


def _metadata(started_at: str) -> dict[str, Any]:
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
