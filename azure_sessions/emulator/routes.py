"""The dynamic-sessions API, route by route, in both dialects: read the request, make one call to the pool, shape the
reply.

Every route answers under the pool's path and checks the bearer token, the api-version and that the version serves
the route first (``dependencies``); the ones that name a session take an :data:`InSession` and so also check its
``identifier`` by the version's rule.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .. import dialects
from . import errors, files, wire
from .dependencies import Authorized, InSession, SessionCall, api_version, serves
from .multipart import MultipartFile
from .sessions import Execution

POOL_PREFIX = "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/sessionPools/{pool_name}"
MAX_EXECUTE_BODY = 16 * 1024 * 1024
DOWNLOAD_CHUNK = 256 * 1024

router = APIRouter(prefix=POOL_PREFIX, dependencies=[Depends(api_version)])


# -- executions ----------------------------------------------------------------------------------------------------
@router.post("/code/execute", dependencies=[serves(dialects.EXECUTE_ENVELOPE)])
async def execute_envelope(request: Request, call: InSession) -> Response:
    record, _ = await _execute(request, call)
    if not record.done.is_set():
        await call.state.blocking(record.done.wait)
    return JSONResponse(wire.envelope_execution(record), 200, headers=wire.execution_headers(record))


@router.post("/executions", dependencies=[serves(dialects.EXECUTE)])
async def execute_resource(request: Request, call: InSession) -> Response:
    record, asked = await _execute(request, call)
    body = wire.resource_execution(record)
    if asked.asynchronous:
        headers = wire.operation_headers(record, call.version, str(request.url).split("?")[0])
        return JSONResponse(body, wire.execute_status_code(call.traits, True), headers=headers)
    return JSONResponse(body, wire.execute_status_code(call.traits), headers=wire.execution_headers(record))


@router.get("/executions/{execution_id}", dependencies=[serves(dialects.GET_EXECUTION)])
async def get_execution(execution_id: str, call: InSession) -> Response:
    record = await call.state.blocking(call.pool.get_execution, call.identifier, execution_id)
    headers = wire.execution_headers(record) if record.done.is_set() else {}
    return JSONResponse(wire.resource_execution(record), 200, headers=headers)


async def _execute(request: Request, call: SessionCall) -> tuple[Execution, wire.ExecutionRequest]:
    """Run the request's code in the session (to the end, unless it asks for an asynchronous execution)."""
    asked = wire.parse_execution_request(await _json_body(request), call.traits)
    record = await call.state.blocking(
        call.pool.execute,
        call.identifier,
        asked.code,
        timeout=asked.timeout,
        execution_type=asked.execution_type,
        execution_id=request.headers.get("operation-id") or None,
        wait=not asked.asynchronous,
        output_max_length=wire.output_limit(call.traits, asked.output_max_length),
        rendering=asked.rendering,
        empty_kernel=asked.empty_kernel,
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
@router.post("/files/upload", dependencies=[serves(dialects.UPLOAD_ENVELOPE)])
async def upload_envelope(request: Request, call: InSession) -> Response:
    entry = await _receive_upload(request, call)
    return JSONResponse(wire.upload_reply(entry, call.traits), 200)


@router.post("/files", dependencies=[serves(dialects.UPLOAD)])
async def upload_resource(request: Request, call: InSession) -> Response:
    entry = await _receive_upload(request, call)
    return JSONResponse(wire.upload_reply(entry, call.traits), 200)


@router.get("/files", dependencies=[serves(dialects.LIST_FILES)])
async def list_files(request: Request, call: InSession) -> Response:
    query = request.query_params
    recursive = query.get("recursive", "").lower() == "true"
    entries = await call.state.blocking(call.pool.list_files, call.identifier, query.get("path"), recursive)
    return JSONResponse(wire.file_list(entries, call.traits), 200)


@router.get("/files/{rest:path}")
async def get_file(request: Request, rest: str, call: InSession) -> Response:
    """A file's content (``files/content/{name}`` or ``files/{name}/content``, as the version serves) or its
    metadata (``files/{name}``)."""
    directory = request.query_params.get("path")
    name = wire.download_name(rest, call.traits)
    if name is not None:
        fd, entry = await call.state.blocking(call.pool.open_file, call.identifier, name, directory)
        headers = {"Content-Length": str(entry.size)}
        return StreamingResponse(_read_fd(fd, entry.size), 200, headers, media_type="application/octet-stream")
    wire.check_route(call.traits, dialects.FILE_INFO)
    entry = await call.state.blocking(call.pool.file_info, call.identifier, rest, directory)
    return JSONResponse(wire.file_metadata(entry, call.traits), 200)


@router.delete("/files/{rest:path}", dependencies=[serves(dialects.DELETE_FILE)])
async def delete_file(request: Request, rest: str, call: InSession) -> Response:
    await call.state.blocking(call.pool.delete_file, call.identifier, rest, request.query_params.get("path"))
    body = wire.deleted_reply(call.traits)
    return Response(status_code=204) if body is None else JSONResponse(body, 200)


async def _receive_upload(request: Request, call: SessionCall) -> files.FileEntry:
    """Stream the multipart body's file part to the staging directory, then move it into the session."""
    state = call.state
    incoming = await state.blocking(
        call.pool.receive_file, call.identifier, request.query_params.get("path"), state.staging_dir,
        state.upload_limit,
    )  # fmt: skip
    receiver = MultipartFile(request.headers.get("content-type"), incoming.open)
    failure: errors.EmulatorError | None = None
    try:
        async for chunk in request.stream():
            if failure is None:
                try:
                    receiver.feed(chunk)
                except errors.EmulatorError as exc:
                    failure = exc  # keep reading so the client gets the answer instead of a broken pipe
                if receiver.upload is not None and receiver.upload.too_large:
                    failure = incoming.too_large()
        if failure is not None:
            raise failure
        receiver.finish()
        return await state.blocking(incoming.publish)
    finally:
        incoming.discard()


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
@router.get("/session", dependencies=[serves(dialects.GET_SESSION)])
async def get_session(call: InSession) -> Response:
    session = await call.state.blocking(call.pool.get_session, call.identifier)
    return JSONResponse(wire.session_body(session), 200)


@router.delete("/session", dependencies=[serves(dialects.DELETE_SESSION)])
async def delete_session(call: InSession) -> Response:
    await call.state.blocking(call.pool.delete_session, call.identifier)
    return Response(status_code=204)


@router.post("/.management/stopSession", dependencies=[serves(dialects.STOP_SESSION)])
async def stop_session(pool_name: str, call: InSession) -> Response:
    await call.state.blocking(call.pool.delete_session, call.identifier)
    return PlainTextResponse(wire.session_stopped(call.identifier, pool_name), 200)


@router.get("/listSessions", dependencies=[serves(dialects.LIST_SESSIONS)])
async def list_sessions(request: Request, state: Authorized) -> Response:
    try:
        skip = max(0, int(request.query_params.get("skip", "0")))
    except ValueError:
        raise errors.bad_request("skip must be a non-negative integer.") from None
    return JSONResponse(wire.session_list(state.pool.list_sessions()[skip:]), 200)


@router.get("/metadata", dependencies=[serves(dialects.METADATA)])
async def metadata(state: Authorized) -> Response:
    return JSONResponse(await state.blocking(wire.pool_metadata, state.info.get("startedAt", "")), 200)
