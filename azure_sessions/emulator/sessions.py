"""The emulated session pool: the emulator's whole state, usable and testable without HTTP (the moto "backend").

A session is created by the first call that names an identifier (an execution or a file operation: each route makes
one call here), owns one worker (its session guid and its ``/mnt/data`` directory), and is destroyed by
``DELETE session``, by the cooldown reaper after ``cooldown`` idle seconds, or by a forced expiry. Beyond
``max_sessions`` a new identifier is refused with 404 or 429 (``pool_full_status``). A dead or hung worker is discarded: the next call gets a fresh worker, a new guid and
an empty directory, exactly like a lost container on Azure.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..dialects import API_VERSIONS, RENDER_LEGACY, IdentifierRule
from ..models import MAX_EXECUTION_SECONDS
from . import errors, files
from .files import FileEntry
from .output import FINISHED, NOT_RUN, OutputFeed, OutputReader, Waker
from .workers import CellResult, OutputCallback, WorkerLost

log = logging.getLogger("azure_sessions.emulator")

DEFAULT_TIMEOUT_SECONDS = 100
"""The timeout of an execution that names none (the envelope versions let clients omit it)."""
IDENTIFIER_RULES = tuple(dict.fromkeys(traits.identifier for traits in API_VERSIONS.values()))
"""Every version's identifier rule; the pool itself accepts an identifier that one of them allows."""
RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"
MAX_AWAITED_OUTPUTS = 256
"""Live-output feeds that readers wait on before their execution exists, in all."""
EXECUTION_LOG_ENTRIES, EXECUTION_LOG_CODE_CHARS = 20_000, 4000
"""The execution log keeps the latest entries, each with the head of its code."""
EXECUTIONS_KEPT_BYTES = 16 << 20
"""What one session's finished executions may hold (their output and results, kept for reads by operation id):
past it the oldest are forgotten, as past ``executions_kept`` of them. The latest is always kept."""


class WorkerLike(Protocol):
    """What a session needs of its worker (``workers.WorkerProcess``)."""

    guid: str
    data_dir: Path
    uid: int | None

    @property
    def alive(self) -> bool: ...

    def execute(
        self,
        code: str,
        timeout: float,
        grace: float = ...,
        on_output: OutputCallback | None = ...,
        *,
        render: str = ...,
        empty_namespace: bool = ...,
    ) -> CellResult: ...

    def interrupt(self, grace: float = ...) -> bool: ...

    def disk_room(self) -> tuple[int, int] | None: ...

    def cleanup(self) -> None: ...


class WorkerSource(Protocol):
    """Where a session gets a new worker (``workers.WorkerPool``)."""

    def acquire(self) -> WorkerLike: ...

    def close(self) -> None: ...


def validate_identifier(identifier: str | None, rule: IdentifierRule | None = None) -> str:
    """``identifier`` when ``rule`` (an api-version's; default: any version's) allows it; 400 naming why otherwise."""
    if not identifier:
        raise errors.EmulatorError(
            400,
            "MissingIdentifier",
            "The identifier query parameter is required for this operation.",
            target="identifier",
        )
    problems = [r.problem(identifier) for r in ((rule,) if rule else IDENTIFIER_RULES)]
    if all(problems):
        raise errors.invalid_identifier(identifier, problems[0] or "")
    return identifier


@dataclass(frozen=True)
class _CellRequest:
    """What an execution asks of the worker: the code, who hears its live output, how its value is written
    (``dialects.RENDER_*``), and whether it runs in a namespace of its own (``useEmptyKernel``)."""

    code: str
    on_output: OutputCallback | None
    rendering: str
    empty_kernel: bool


@dataclass
class Execution:
    """One code execution; ``done`` is set when it finished (for asynchronous executions)."""

    id: str
    identifier: str
    execution_type: str
    code: str
    status: str = RUNNING
    stdout: str = ""
    stderr: str = ""
    result: Any = ""
    duration_ms: int = 0
    session_guid: str = ""
    output_max_length: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    feed: OutputFeed | None = None
    """Its live output while it runs (``EmulatedPool.open_output``); None once it ended."""
    size: int = 0
    """What its output and result hold, once it ended (``EXECUTIONS_KEPT_BYTES``)."""


class Session:
    def __init__(self, identifier: str, cooldown: float, clock: Callable[[], float]) -> None:
        self.identifier = identifier
        self.created_at = time.time()
        self.last_accessed_at = self.created_at
        self._clock = clock
        self._cooldown = cooldown
        self.deadline = clock() + cooldown
        self.worker: WorkerLike | None = None
        self.alloc_lock = threading.Lock()  # worker (re)assignment
        self.exec_lock = threading.Lock()  # one execution at a time, per session only
        self.busy = 0
        self.deleted = False
        self.executions: OrderedDict[str, Execution] = OrderedDict()

    def touch(self) -> None:
        self.last_accessed_at = time.time()
        self.deadline = self._clock() + self._cooldown

    @property
    def guid(self) -> str | None:
        return self.worker.guid if self.worker is not None else None

    @property
    def expires_at(self) -> float:
        return self.last_accessed_at + self._cooldown


class EmulatedPool:
    """All sessions of one pool. Thread-safe; executions in different sessions run concurrently."""

    def __init__(
        self,
        workers: WorkerSource,
        *,
        cooldown: float = 300.0,
        max_sessions: int = 100,
        clock: Callable[[], float] = time.monotonic,
        interrupt_grace: float = 3.0,
        executions_kept: int = 500,
        executions_kept_bytes: int = EXECUTIONS_KEPT_BYTES,
        interruptible: bool = True,
        pool_full_status: int = 404,
    ) -> None:
        if pool_full_status not in errors.POOL_FULL_STATUSES:
            raise ValueError(f"pool_full_status must be one of {errors.POOL_FULL_STATUSES}, not {pool_full_status!r}")
        self.workers = workers
        self.pool_full_status = pool_full_status  # how a new identifier is refused at max_sessions: 404 or 429
        self.interruptible = interruptible  # False: answer the interrupt route like the service (no such operation)
        self.live_output = True  # False: answer the live-output route like the service (no such operation)
        self.cooldown = float(cooldown)
        self.max_sessions = int(max_sessions)
        self.interrupt_grace = interrupt_grace
        self._clock = clock
        self._executions_kept = executions_kept
        self._executions_kept_bytes = executions_kept_bytes
        self._sessions: dict[str, Session] = {}
        self._awaited: dict[tuple[str, str], OutputFeed] = {}  # live output a reader waits for, by (identifier, id)
        self._cond = threading.Condition()
        self._closed = False
        self._reaper = threading.Thread(target=self._reap_loop, name="emulator-reaper", daemon=True)
        self._async = ThreadPoolExecutor(max_workers=64, thread_name_prefix="emulator-async")
        self.execution_log: deque[dict[str, Any]] = deque(maxlen=EXECUTION_LOG_ENTRIES)
        self.executions_total = 0
        self.sessions_created = 0
        self.sessions_expired = 0

    def start(self) -> None:
        self._reaper.start()

    # -- sessions ------------------------------------------------------------------------------------------------
    def _session(self, identifier: str) -> Session:
        validate_identifier(identifier)
        with self._cond:
            if self._closed:
                raise errors.EmulatorError(503, "ServiceUnavailable", "The emulator is shutting down.")
            session = self._sessions.get(identifier)
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    raise self.full_error()
                session = self._sessions[identifier] = Session(identifier, self.cooldown, self._clock)
                self.sessions_created += 1
                self._cond.notify_all()
            session.touch()
            return session

    def full_error(self, status: int | None = None) -> errors.EmulatorError:
        """What a new identifier gets when the pool is full (``status``: 404 or 429; default the pool's)."""
        return errors.pool_full(self.max_sessions, status or self.pool_full_status)

    def _ensure_worker(self, session: Session) -> tuple[WorkerLike, float]:
        """The session's live worker, allocating one (and the milliseconds that took) if needed."""
        with session.alloc_lock:
            worker = session.worker
            if worker is not None and worker.alive:
                return worker, 0.0
            if worker is not None:
                worker.cleanup()
                session.worker = None
            started = time.perf_counter()
            try:
                worker = self.workers.acquire()
            except WorkerLost as exc:
                raise errors.EmulatorError(
                    503, "SessionAllocationFailed", f"Could not start a session sandbox: {exc}"
                ) from None
            if session.deleted:
                worker.cleanup()
                raise errors.session_not_found(session.identifier)
            session.worker = worker
            return worker, (time.perf_counter() - started) * 1000

    def session_dir(self, identifier: str) -> tuple[Session, Path, int | None]:
        """Allocate-or-get the session and return its /mnt/data directory and the worker's uid (files ops)."""
        session = self._session(identifier)
        worker, _ = self._ensure_worker(session)
        return session, worker.data_dir, worker.uid

    # -- files (each allocates the session on first use, as every call naming an identifier does) ------------------
    def list_files(self, identifier: str, directory: str | None = None, recursive: bool = False) -> list[FileEntry]:
        """The regular files and directories in ``directory`` (relative to /mnt/data), recursively if asked."""
        parts = files.split_path(None, directory, allow_root=True)
        _, root, _ = self.session_dir(identifier)
        return files.list_dir(root, parts, recursive)

    def file_info(self, identifier: str, name: str, directory: str | None = None) -> FileEntry:
        parts = files.split_path(name, directory)
        _, root, _ = self.session_dir(identifier)
        return files.stat_file(root, parts)

    def open_file(self, identifier: str, name: str, directory: str | None = None) -> tuple[int, FileEntry]:
        """A read-only fd on a regular file (never through a link) and its entry; the caller closes the fd."""
        parts = files.split_path(name, directory)
        _, root, _ = self.session_dir(identifier)
        return files.open_for_read(root, parts)

    def delete_file(self, identifier: str, name: str, directory: str | None = None) -> None:
        parts = files.split_path(name, directory)
        _, root, _ = self.session_dir(identifier)
        files.delete(root, parts)

    def receive_file(
        self, identifier: str, directory: str | None, staging_dir: Path, limit: int
    ) -> files.IncomingFile:
        """An upload into the session's ``directory``, to be streamed and then published (see
        :class:`files.IncomingFile`); the session is allocated now, before any byte is read. A session whose files
        take its whole disk budget is refused (409), and an upload may take only the room left."""
        session = self._session(identifier)
        worker, _ = self._ensure_worker(session)
        disk = worker.disk_room()
        if disk is not None and disk[0] >= disk[1]:
            raise errors.disk_budget_exceeded(*disk)
        return files.IncomingFile(worker.data_dir, worker.uid, directory, staging_dir, limit, disk=disk)

    def get_session(self, identifier: str) -> Session:
        validate_identifier(identifier)
        with self._cond:
            session = self._sessions.get(identifier)
            if session is None:
                raise errors.session_not_found(identifier)
            session.touch()
            return session

    def list_sessions(self) -> list[Session]:
        with self._cond:
            return sorted(self._sessions.values(), key=lambda s: s.created_at)

    def delete_session(self, identifier: str) -> None:
        validate_identifier(identifier)
        with self._cond:
            session = self._sessions.pop(identifier, None)
        if session is None:
            raise errors.session_not_found(identifier)
        self._destroy(session)

    def expire(self, identifier: str | None = None) -> int:
        """Force expiry now (all sessions when ``identifier`` is None); returns how many were destroyed."""
        with self._cond:
            if identifier is None:
                doomed = list(self._sessions.values())
                self._sessions.clear()
            else:
                found = self._sessions.pop(identifier, None)
                doomed = [found] if found else []
            self.sessions_expired += len(doomed)
        for session in doomed:
            self._destroy(session)
        return len(doomed)

    def _destroy(self, session: Session) -> None:
        session.deleted = True
        with session.alloc_lock:
            worker, session.worker = session.worker, None
        if worker is not None:
            worker.cleanup()

    def reap(self, now: float | None = None) -> float | None:
        """Destroy idle sessions past their cooldown; returns the next deadline (or None when there are none)."""
        now = self._clock() if now is None else now
        with self._cond:
            doomed = [s for s in self._sessions.values() if s.busy == 0 and s.deadline <= now]
            for session in doomed:
                del self._sessions[session.identifier]
            self.sessions_expired += len(doomed)
            deadlines = [s.deadline for s in self._sessions.values() if s.busy == 0]
        for session in doomed:
            log.info("session %s expired after %.0f s idle", session.identifier, self.cooldown)
            self._destroy(session)
        return min(deadlines) if deadlines else None

    def _reap_loop(self) -> None:
        while True:
            next_deadline = self.reap()
            with self._cond:
                if self._closed:
                    return
                wait = None if next_deadline is None else max(0.01, next_deadline - self._clock())
                self._cond.wait(timeout=wait)
                if self._closed:
                    return

    # -- executions ----------------------------------------------------------------------------------------------
    def execute(
        self,
        identifier: str,
        code: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        execution_type: str = "Synchronous",
        execution_id: str | None = None,
        wait: bool = True,
        output_max_length: int | None = None,
        on_output: OutputCallback | None = None,
        rendering: str = RENDER_LEGACY,
        empty_kernel: bool = False,
    ) -> Execution:
        """Run ``code`` in the identifier's session; with ``wait=False`` return at once with status Running.

        ``on_output(stream, text)`` is called with what the code writes to ``stream`` ("stdout" | "stderr") while
        it runs (a few times a second at most, within the output cap; from the executing thread); the execution's
        ``stdout`` and ``stderr`` hold all of it when it ends, as without a callback.

        A repeated ``execution_id`` (the ``operation-id`` request header) returns the earlier execution instead of
        running the code again, so a client can retry a POST whose reply was lost without executing twice.
        ``rendering`` is how the last value is written (``dialects.RENDER_*``); ``empty_kernel`` runs the code in a
        namespace of its own, the session's variables untouched (``useEmptyKernel``).
        """
        timeout = min(max(float(timeout), 1.0), MAX_EXECUTION_SECONDS)
        try:
            session = self._session(identifier)
        except errors.EmulatorError:
            self._end_awaited(identifier, execution_id, NOT_RUN)
            raise
        record = Execution(execution_id or str(uuid.uuid4()), identifier, execution_type, code)
        record.output_max_length = output_max_length
        with self._cond:
            earlier = session.executions.get(record.id)
            if earlier is None:
                record.feed = self._awaited.pop((identifier, record.id), None) or OutputFeed()
                record.feed.claimed = True
                session.busy += 1
                session.executions[record.id] = record
                while len(session.executions) > self._executions_kept:
                    session.executions.popitem(last=False)
        if earlier is not None:
            if wait:
                earlier.done.wait()
            return earlier
        cell = _CellRequest(record.code, _also_to(record.feed, on_output), rendering, empty_kernel)
        if wait:
            self._run(session, record, timeout, cell)
        else:
            self._async.submit(self._run, session, record, timeout, cell)
        return record

    def _run(self, session: Session, record: Execution, timeout: float, request: _CellRequest) -> None:
        try:
            received = time.perf_counter()
            with session.exec_lock:
                worker, allocation_ms = self._ensure_worker(session)
                record.session_guid = worker.guid
                with self._cond:
                    self.executions_total += 1
                    self.execution_log.append({"id": record.id, "identifier": session.identifier,
                                               "sessionGuid": worker.guid,
                                               "code": record.code[:EXECUTION_LOG_CODE_CHARS],
                                               "startedAt": time.time()})  # fmt: skip
                started = time.perf_counter()
                try:
                    cell = worker.execute(
                        request.code,
                        timeout,
                        self.interrupt_grace,
                        request.on_output,
                        render=request.rendering,
                        empty_namespace=request.empty_kernel,
                    )
                except WorkerLost as exc:
                    cell = self._lost(session, worker, str(exc))
                finished = time.perf_counter()
            record.stdout, record.stderr, record.result = cell.stdout, cell.stderr, cell.result
            record.duration_ms = cell.duration_ms
            if cell.timed_out:
                record.stderr += _timeout_notice(timeout, cell.ended_processes)
            record.status = SUCCEEDED if cell.ok else FAILED
            record.timings = {
                "allocation": allocation_ms,
                "preparation": (started - received) * 1000 - allocation_ms,
                "execution": (finished - started) * 1000,
                "overall": (finished - received) * 1000,
            }
        except errors.EmulatorError as exc:
            record.status, record.stderr = FAILED, exc.message
        except Exception as exc:  # never leave an execution Running forever
            log.exception("execution %s failed inside the emulator", record.id)
            record.status, record.stderr = FAILED, f"Internal emulator error: {exc!r}"
        finally:
            with self._cond:
                session.busy -= 1
                session.touch()
                feed, record.feed = record.feed, None  # its readers finish what it holds; later ones read the result
                record.size = len(record.stdout) + len(record.stderr) + _value_size(record.result)
                self._forget_oldest(session, record)
                self._cond.notify_all()
            if feed is not None:
                feed.end(FINISHED)
            record.done.set()

    def _forget_oldest(self, session: Session, latest: Execution) -> None:
        """Forget the session's oldest finished executions until what they hold is within the budget."""
        held = sum(kept.size for kept in session.executions.values())
        for key, kept in list(session.executions.items()):
            if held <= self._executions_kept_bytes:
                break
            if kept is not latest and kept.done.is_set():
                held -= kept.size
                del session.executions[key]

    def open_output(self, identifier: str, execution_id: str, waker: Waker) -> OutputReader:
        """A reader of the live output of the session's execution ``execution_id`` (its ``operation-id``), from its
        start: an emulator extension, the service has none. ``waker()`` is called (from another thread) whenever
        there is more to read or the output ended. An execution that has not arrived yet is waited for (the reader
        decides how long); one that ended long ago reads as its final stdout and stderr. Another session's
        execution is never found. 429 past ``output.MAX_READERS`` readers of one execution, or
        MAX_AWAITED_OUTPUTS awaited ones. Close the reader when done."""
        validate_identifier(identifier)
        with self._cond:
            session = self._sessions.get(identifier)
            record = session.executions.get(execution_id) if session is not None else None
            if record is not None:
                feed = record.feed or OutputFeed.of_finished(record.stdout, record.stderr)
            else:
                feed = self._awaited.get((identifier, execution_id))
                if feed is None:
                    if len(self._awaited) >= MAX_AWAITED_OUTPUTS:
                        raise errors.too_many_readers("executions awaited by live-output readers")
                    feed = self._awaited[(identifier, execution_id)] = OutputFeed()
            if not feed.attach(waker):
                raise errors.too_many_readers("readers of this execution's output")
        return OutputReader(feed, waker, lambda reader: self._forget_awaited(identifier, execution_id, reader.feed))

    def _forget_awaited(self, identifier: str, execution_id: str, feed: OutputFeed) -> None:
        """A reader let go: an awaited feed that nobody reads any more is dropped."""
        with self._cond:
            key = (identifier, execution_id)
            if self._awaited.get(key) is feed and not feed.claimed and feed.readers == 0:
                del self._awaited[key]

    def _end_awaited(self, identifier: str, execution_id: str | None, how: str) -> None:
        with self._cond:
            feed = self._awaited.pop((identifier, execution_id), None) if execution_id else None
        if feed is not None:
            feed.end(how)

    def interrupt(self, identifier: str) -> bool:
        """Interrupt the session's running execution, as its timeout would (an emulator extension: the service has
        no such operation). The execution ends with a KeyboardInterrupt and the session keeps its state; code that
        ignores the interrupt for ``interrupt_grace`` seconds loses its worker. False when nothing was running."""
        validate_identifier(identifier)
        with self._cond:
            session = self._sessions.get(identifier)
        worker = session.worker if session is not None else None
        if worker is None:
            return False
        return worker.interrupt(self.interrupt_grace)

    def _lost(self, session: Session, worker: WorkerLike, why: str) -> CellResult:
        with session.alloc_lock:
            if session.worker is worker:
                session.worker = None
        worker.cleanup()
        fate = "The session was deleted." if session.deleted else (
            "Its variables, imports and files in /mnt/data were lost; the next execution starts a fresh session "
            "with a new session id."
        )  # fmt: skip
        return CellResult(False, "", f"SessionLost: {why}. {fate}\n", "", 0)

    def get_execution(self, identifier: str, execution_id: str) -> Execution:
        session = self.get_session(identifier)
        record = session.executions.get(execution_id)
        if record is None:
            raise errors.not_found(
                f"No execution with id {execution_id!r} exists in session {identifier!r}.", "ExecutionNotFound"
            )
        return record

    # -- introspection and shutdown ------------------------------------------------------------------------------
    def execution_count(self, identifier: str | None = None) -> int:
        with self._cond:
            if identifier is None:
                return self.executions_total
            return sum(1 for entry in self.execution_log if entry["identifier"] == identifier)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "sessions": len(self._sessions),
                "sessionsCreated": self.sessions_created,
                "sessionsExpired": self.sessions_expired,
                "executionsTotal": self.executions_total,
                "maxSessions": self.max_sessions,
                "cooldownSeconds": self.cooldown,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            doomed = list(self._sessions.values())
            self._sessions.clear()
            awaited = list(self._awaited.values())
            self._awaited.clear()
            self._cond.notify_all()
        for feed in awaited:
            feed.end(NOT_RUN)
        for session in doomed:
            self._destroy(session)
        self._async.shutdown(wait=False, cancel_futures=True)
        self.workers.close()
        if self._reaper.is_alive():
            self._reaper.join(timeout=5)


def _also_to(feed: OutputFeed | None, on_output: OutputCallback | None) -> OutputCallback | None:
    """The worker's live-output callback: the execution's feed, then the caller's own callback."""
    if feed is None:
        return on_output

    def deliver(stream: str, text: str) -> None:
        feed.append(stream, text)
        if on_output is not None:
            on_output(stream, text)

    return deliver


def _timeout_notice(timeout: float, ended: int) -> str:
    """What an execution's stderr says after its timeout interrupted it."""
    processes = (
        f" {ended} process{'es' if ended != 1 else ''} it started {'were' if ended != 1 else 'was'} ended."
        if ended
        else ""
    )
    return (
        f"\nTimeoutError: the execution exceeded its timeout of {timeout:g} seconds and was interrupted "
        f"(KeyboardInterrupt).{processes} The session and its variables were kept.\n"
    )


def _value_size(value: Any) -> int:
    """About what a result value holds (its text; containers summed)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(key)) + _value_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(_value_size(item) for item in value)
    return 16
