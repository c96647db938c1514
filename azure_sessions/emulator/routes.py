"""The dynamic-sessions API, route by route, in both dialects: read the request, call the pool, shape the reply.

Every route answers under the pool's path and checks the bearer token and the api-version first (``dependencies``);
the ones that name a session take an :data:`InSession` and so also check its ``identifier``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from . import errors, files, wire
from .dependencies import Authorized, InSession, SessionCall, api_version
from .multipart import MultipartFile
from .sessions import Execution

POOL_PREFIX = "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/sessionPools/{pool_name}"
MAX_EXECUTE_BODY = 16 * 1024 * 1024
DOWNLOAD_CHUNK = 256 * 1024

router = APIRouter(prefix=POOL_PREFIX, dependencies=[Depends(api_version)])


# -- executions ----------------------------------------------------------------------------------------------------
@router.post("/code/execute")
async def execute_envelope(request: Request, call: InSession) -> Response:
    record, _ = await _execute(request, call)
    if not record.done.is_set():
        await call.state.blocking(record.done.wait)
    return JSONResponse(wire.envelope_execution(record), 200, headers=wire.execution_headers(record))


@router.post("/executions")
async def execute_resource(request: Request, call: InSession) -> Response:
    record, asked = await _execute(request, call)
    body = wire.resource_execution(record)
    if asked.asynchronous:
        headers = wire.operation_headers(record, call.version, str(request.url).split("?")[0])
        return JSONResponse(body, wire.execute_status_code(call.version, True), headers=headers)
    return JSONResponse(body, wire.execute_status_code(call.version), headers=wire.execution_headers(record))


@router.get("/executions/{execution_id}")
async def get_execution(execution_id: str, call: InSession) -> Response:
    record = await call.state.blocking(call.pool.get_execution, call.identifier, execution_id)
    headers = wire.execution_headers(record) if record.done.is_set() else {}
    return JSONResponse(wire.resource_execution(record), 200, headers=headers)


async def _execute(request: Request, call: SessionCall) -> tuple[Execution, wire.ExecutionRequest]:
    """Run the request's code in the session (to the end, unless it asks for an asynchronous execution)."""
    asked = wire.parse_execution_request(await _json_body(request))
    record = await call.state.blocking(
        call.pool.execute,
        call.identifier,
        asked.code,
        timeout=asked.timeout,
        execution_type=asked.execution_type,
        execution_id=request.headers.get("operation-id") or None,
        wait=not asked.asynchronous,
        output_max_length=wire.output_limit(call.version, asked.output_max_length),
    )
    return record, asked


async def _json_body(request: Request) -> object:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_EXECUTE_BODY:
            raise errors.EmulatorError(
                413, "RequestTooLarge", f"The execution request exceeds {MAX_EXECUTE_BODY // 2**20} MiB."
            )
    try:
        return json.loads(bytes(raw) or b"null")
    except ValueError:
        raise errors.invalid_body("The request body is not valid JSON.") from None


# -- files ---------------------------------------------------------------------------------------------------------
@router.post("/files/upload")
async def upload_envelope(request: Request, call: InSession) -> Response:
    entry = await _receive_upload(request, call, request.query_params.get("path"))
    return JSONResponse(wire.envelope_upload(entry), 200)


@router.post("/files")
async def upload_resource(request: Request, call: InSession) -> Response:
    entry = await _receive_upload(request, call, request.query_params.get("path"))
    return JSONResponse(wire.upload_reply(entry, call.version), 200)


@router.get("/files")
async def list_files(request: Request, call: InSession) -> Response:
    parts = files.split_path(None, request.query_params.get("path"), allow_root=True)
    recursive = request.query_params.get("recursive", "").lower() == "true"
    root, _ = await call.directory()
    entries = await call.state.blocking(files.list_dir, root, parts, recursive)
    return JSONResponse(wire.file_list(entries, call.version), 200)


@router.get("/files/{rest:path}")
async def get_file(request: Request, rest: str, call: InSession) -> Response:
    directory = request.query_params.get("path")
    name = wire.download_name(rest, call.version)
    if name is not None:
        return await _download(call, files.split_path(name, directory))
    parts = files.split_path(rest, directory)
    root, _ = await call.directory()
    entry = await call.state.blocking(files.stat_file, root, parts)
    return JSONResponse(wire.file_metadata(entry, call.version), 200)


@router.delete("/files/{rest:path}")
async def delete_file(request: Request, rest: str, call: InSession) -> Response:
    parts = files.split_path(rest, request.query_params.get("path"))
    root, _ = await call.directory()
    await call.state.blocking(files.delete, root, parts)
    body = wire.deleted_reply(call.version)
    return Response(status_code=204) if body is None else JSONResponse(body, 200)


async def _receive_upload(request: Request, call: SessionCall, directory: str | None) -> files.FileEntry:
    """Stream the multipart body's file part to the staging directory, then move it into the session."""
    state = call.state
    root, uid = await call.directory()
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
        return await state.blocking(upload.publish, root, target[0], uid)
    finally:
        if receiver.upload is not None:
            receiver.upload.discard()


async def _download(call: SessionCall, parts: list[str]) -> Response:
    root, _ = await call.directory()
    fd, entry = await call.state.blocking(files.open_for_read, root, parts)
    headers = {"Content-Length": str(entry.size)}
    return StreamingResponse(_read_fd(fd, entry.size), 200, headers, media_type="application/octet-stream")


def _read_fd(fd: int, size: int) -> Iterator[bytes]:
    try:
        left = size
        while left > 0:
            data = os.read(fd, min(DOWNLOAD_CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        os.close(fd)


# -- sessions and the pool -----------------------------------------------------------------------------------------
@router.get("/session")
async def get_session(call: InSession) -> Response:
    session = await call.state.blocking(call.pool.get_session, call.identifier)
    return JSONResponse(wire.session_body(session), 200)


@router.delete("/session")
async def delete_session(call: InSession) -> Response:
    await call.state.blocking(call.pool.delete_session, call.identifier)
    return Response(status_code=204)


@router.post("/.management/stopSession")
async def stop_session(pool_name: str, call: InSession) -> Response:
    await call.state.blocking(call.pool.delete_session, call.identifier)
    return PlainTextResponse(wire.session_stopped(call.identifier, pool_name), 200)


@router.get("/listSessions")
async def list_sessions(request: Request, state: Authorized) -> Response:
    try:
        skip = max(0, int(request.query_params.get("skip", "0")))
    except ValueError:
        raise errors.bad_request("skip must be a non-negative integer.") from None
    return JSONResponse(wire.session_list(state.pool.list_sessions()[skip:]), 200)


@router.get("/metadata")
async def metadata(state: Authorized) -> Response:
    return JSONResponse(await state.blocking(wire.pool_metadata, state.info.get("startedAt", "")), 200)
