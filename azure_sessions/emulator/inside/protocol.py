"""The host <-> sandbox protocol (standalone, stdlib only: loaded inside the sandbox, imported by the host).

Every message is a frozen dataclass whose class names its ``op``; on the wire it is a JSON object ``{"op": ..., field:
value, ...}``. Decoding is strict: an unknown op, a missing or unknown field, or a value of the wrong type raises
:class:`ProtocolError`, so a misspelt key fails on the first message instead of being read as "absent".

Two channels carry them:

- **host <-> worker** (the worker's stdin and stdout pipes): frames of a 4-byte big-endian length, then the UTF-8
  JSON (:func:`frame`, :class:`FrameReader`).
  host -> worker: :class:`Exec`, :class:`Interrupt`, :class:`Reap`, :class:`Exit`;
  worker -> host: :class:`Ready`, then per execution any number of :class:`Output` and one :class:`Result`; at
  any time after ``Ready``, :class:`Log` (an internal warning: the worker's log pipe is closed by then).
- **host <-> template** (a ``SOCK_SEQPACKET`` socket: one datagram per message, file descriptors beside it):
  host -> template: :class:`Fork` (with the new worker's stdin, stdout and log fds);
  template -> host: :class:`TemplateReady` (with a pidfd of itself), :class:`Forked` (with a pidfd of the child),
  :class:`ForkFailed`, :class:`Exited`.

The worker's configuration travels inside :class:`Fork` as a :class:`WorkerConfig`; the template's own as a
:class:`TemplateConfig` on its command line. Neither has defaults: whoever builds one says every field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import threading
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
STREAMS = ("stdout", "stderr")
RENDER_LEGACY, RENDER_JSON, RENDER_JUPYTER = "legacy", "json", "jupyter"
RENDERINGS = (RENDER_LEGACY, RENDER_JSON, RENDER_JUPYTER)
"""How a cell's last value is written (the api-versions' renderings; ``dialects.RENDER_*`` names the same)."""
"""The streams a cell writes to, in the order of fds 1 and 2 (``Output.stream``)."""

T = TypeVar("T")


class ProtocolError(ValueError):
    """Something that is not a message of this protocol: an unknown op, a missing or unknown field, a wrong type, a
    malformed or oversized frame."""


class FrameTooLarge(ProtocolError):
    """A frame announced more than ``MAX_FRAME`` bytes."""


# -- strict conversion between dataclasses and JSON values ---------------------------------------------------------
def to_dict(value: Any) -> dict[str, Any]:
    """A dataclass (nested ones included) as a dict of JSON values."""
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def to_json(value: Any) -> str:
    """A dataclass as compact JSON (a configuration on a command line)."""
    return json.dumps(to_dict(value), separators=(",", ":"))


def from_json(cls: type[T], text: str | bytes) -> T:
    """``cls`` from its JSON, strictly (:func:`from_dict`)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"{cls.__name__}: not JSON: {exc}") from None
    return from_dict(cls, data)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """``cls`` (a dataclass) from ``data``; every field must be present, no other key may be."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in data]
    unknown = sorted(set(data) - set(names))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise ProtocolError(f"{where}: {'; '.join(parts)}")
    return cls(**{name: _convert(hints[name], data[name], f"{where}.{name}") for name in names})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _convert(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[0] if len(errors) == 1 else f"{where}: none of {hint} fits {value!r}"[:300])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        return {_convert(args[0], k, where): _convert(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ProtocolError(f"{where}: expected int, got bool")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ProtocolError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}")


# -- the worker's and the template's configuration -----------------------------------------------------------------
@dataclass(frozen=True)
class Rlimits:
    """Resource limits set with ``setrlimit`` before any user code runs (None: no limit)."""

    memory_bytes: int | None
    cpu_seconds: int | None
    max_processes: int | None
    file_size_bytes: int | None
    core_bytes: int | None


@dataclass(frozen=True)
class Namespaces:
    """The bubblewrap tier: what ``namespaces.enter`` gives the worker (its session's directory, its ``/tmp`` and
    ``/dev/shm`` from its scratch directory as the template sees them, the Python environment's directories below
    ``/tmp`` bound back read-only)."""

    guid: str
    tmp_dir: str
    shm_dir: str
    drop_capabilities: bool
    tmp_binds: list[str]


@dataclass(frozen=True)
class Confinement:
    """The Landlock tier: the arguments of ``confine.confine``."""

    read_only: list[str]
    read_write: list[str]
    devices: list[str]


SUPERVISOR_FD = 3
"""Where a worker finds its end of the process supervisor's socket (beside its stdin, stdout and log in the fork
request) when its policy is ``supervised``."""


@dataclass(frozen=True)
class Policy:
    """The seccomp policy every tier installs (``policy.install``): the tier's rules (``policy.TierRules``, with the
    signals left unguarded where Landlock's signal scope keeps them inside the session), the pids kept out of reach of signals where the filter must guard them
    (the server's process and group, the template), and whether the process supervisor answers the session's
    process-creating calls (the exact task cap: its socket is at ``SUPERVISOR_FD``)."""

    tier: str  # the tier's name, for reports only
    sockets: bool
    sysv_ipc: bool
    guard_signals: bool
    protected_pids: list[int]
    supervised: bool


@dataclass(frozen=True)
class PathMapping:
    """No mount namespace: virtual directories (``/mnt/data``, ``/tmp``) -> the session's real ones, and the
    session's own real directories, which stay as they are."""

    virtual: dict[str, str]
    own: list[str]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a forked worker needs to become one session's: consumed while it sets itself up, then dropped (it
    holds host pids that user code must not find)."""

    uid: int | None  # a private uid to change to (a root emulator), else None
    gid: int | None
    limits: Rlimits
    nice: int  # added to the worker's nice value before any user code runs
    data_dir: str  # /mnt/data as the worker sees it: its working directory
    max_stream_bytes: int  # per cell and stream, what is captured (and streamed live)
    max_result_chars: int  # the last expression's text, at most
    max_image_bytes: int  # the image a cell shows (PNG), at most: a larger one is left out and stderr says so
    whole_pid_namespace: bool  # every process in the worker's PID namespace is the session's (bubblewrap)
    namespaces: Namespaces | None
    policy: Policy | None  # None only where the kernel has no seccomp (not Linux: the unisolated tier)
    confinement: Confinement | None
    path_mapping: PathMapping | None


@dataclass(frozen=True)
class TemplateConfig:
    """The template's command-line argument: the helper modules its tier loads, the modules to import once, and the
    inherited control socket."""

    helpers: list[str]
    preload: list[str]
    control_fd: int


# -- messages -----------------------------------------------------------------------------------------------------
class Message:
    """A protocol message: a frozen dataclass with its ``op``."""

    op: ClassVar[str]
    flat: ClassVar[bool]  # no field holds a dataclass: its instance dict is its JSON object


def _has_dataclass(hint: Any) -> bool:
    return any(dataclasses.is_dataclass(arg) or _has_dataclass(arg) for arg in typing.get_args(hint))


_ENCODER = json.JSONEncoder(separators=(",", ":"))


_MESSAGES: dict[str, type[Message]] = {}


def _message(op: str):
    def register(cls):
        cls = dataclass(frozen=True)(cls)
        cls.op = op
        cls.flat = not any(dataclasses.is_dataclass(hint) or _has_dataclass(hint) for hint in _hints(cls).values())
        if op in _MESSAGES:
            raise RuntimeError(f"op {op!r} defined twice")
        _MESSAGES[op] = cls
        return cls

    return register


@_message("exec")
class Exec(Message):
    """Run ``code`` as one cell; with ``live_output``, send :class:`Output` messages while it runs. ``render`` is how
    its last value is written (one of ``RENDERINGS``); ``empty_namespace`` runs it in a namespace of its own, the
    session's variables untouched."""

    id: str
    code: str
    live_output: bool
    render: str
    empty_namespace: bool

    def __post_init__(self) -> None:
        if self.render not in RENDERINGS:
            raise ProtocolError(f"exec: unknown rendering {self.render!r}; known: {RENDERINGS}")


@_message("interrupt")
class Interrupt(Message):
    """Interrupt the cell ``id`` if it is still running (KeyboardInterrupt)."""

    id: str


@_message("reap")
class Reap(Message):
    """Processes the host ended: collect those that are the worker's children."""

    pids: list[int]


@_message("exit")
class Exit(Message):
    """End the worker."""


@_message("ready")
class Ready(Message):
    """The worker is set up for its session and waits for cells."""

    pid: int
    python: str
    prefix: str
    ipython: str
    policy: dict[str, Any] | None  # what policy.py installed, else None
    confined: dict[str, Any] | None  # what confine.py applied (the Landlock tier), else None


@_message("output")
class Output(Message):
    """Text a running cell wrote to ``stream`` ("stdout" | "stderr"), sent as it comes (coalesced)."""

    id: str
    stream: str
    text: str


@_message("result")
class Result(Message):
    """How the cell ``id`` ended: its whole (capped) stdout and stderr, and its result value."""

    id: str
    ok: bool
    stdout: str
    stderr: str
    result: Any  # a JSON scalar, text, or {"type": "image", "format": "png", "base64_data": ...}
    duration_ms: int
    interrupted: bool
    ended_processes: int


@_message("log")
class Log(Message):
    """An internal warning of a ready worker (before it is ready, it writes them to its log pipe)."""

    text: str


@_message("fork")
class Fork(Message):
    """Fork a worker for a new session (its stdin, stdout and log fds travel beside this message, then the process
    supervisor's socket when its policy is ``supervised``)."""

    id: int
    config: WorkerConfig
    env: dict[str, str]


@_message("template-ready")
class TemplateReady(Message):
    """The template has prepared itself (a pidfd of it travels beside: the host learns its pid as it sees it)."""

    pid: int


@_message("forked")
class Forked(Message):
    """Request ``id`` forked ``pid`` (a pidfd of the child travels beside)."""

    id: int
    pid: int


@_message("fork-failed")
class ForkFailed(Message):
    id: int
    error: str


@_message("exited")
class Exited(Message):
    """A forked worker ended with wait status ``status`` (``pid`` as the template sees it)."""

    pid: int
    status: int


TO_WORKER: tuple[type[Message], ...] = (Exec, Interrupt, Reap, Exit)
FROM_WORKER: tuple[type[Message], ...] = (Ready, Output, Result, Log)
TO_TEMPLATE: tuple[type[Message], ...] = (Fork,)
FROM_TEMPLATE: tuple[type[Message], ...] = (TemplateReady, Forked, ForkFailed, Exited)


def encode(message: Message) -> bytes:
    """One message as UTF-8 JSON (a datagram of the template's socket, or a frame's body)."""
    fields = vars(message) if message.flat else to_dict(message)  # the short way touches fewer shared pages
    return _ENCODER.encode({"op": message.op, **fields}).encode("utf-8")


def decode(data: bytes, expected: Iterable[type[Message]]) -> Message:
    """The message in ``data``, which must be one of the ``expected`` kinds."""
    try:
        fields = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError(f"expected an object, got {type(fields).__name__}")
    op = fields.pop("op", None)
    kind = _MESSAGES.get(op) if isinstance(op, str) else None
    if kind is None or kind not in tuple(expected):
        raise ProtocolError(f"unexpected op {op!r}")
    return from_dict(kind, fields, op)


def warm_up() -> None:
    """Encode and decode one message of every kind, so the caches and code this takes are made now: a template calls
    it before it freezes its memory, and the workers it forks share them instead of making their own copies."""
    config = WorkerConfig(uid=None, gid=None, limits=Rlimits(memory_bytes=None, cpu_seconds=None, max_processes=None,
                          file_size_bytes=None, core_bytes=None), nice=0, data_dir="/", max_stream_bytes=1,
                          max_result_chars=1, max_image_bytes=1, whole_pid_namespace=False, namespaces=Namespaces(guid="", tmp_dir="",
                          shm_dir="", drop_capabilities=False, tmp_binds=[]), policy=Policy(tier="", sockets=False,
                          sysv_ipc=False, guard_signals=False, protected_pids=[], supervised=False), confinement=Confinement(read_only=[], read_write=[],
                          devices=[]), path_mapping=PathMapping(virtual={}, own=[]))  # fmt: skip
    samples = [Exec(id="", code="", live_output=False, render=RENDER_LEGACY, empty_namespace=False), Interrupt(id=""), Reap(pids=[0]), Exit(),
               Ready(pid=0, python="", prefix="", ipython="", policy={}, confined={}), Output(id="", stream="stdout", text=""),
               Result(id="", ok=True, stdout="", stderr="", result="", duration_ms=0, interrupted=False,
                      ended_processes=0), Log(text=""), Fork(id=0, config=config, env={}), TemplateReady(pid=0),
               Forked(id=0, pid=0), ForkFailed(id=0, error=""), Exited(pid=0, status=0)]  # fmt: skip
    reader = FrameReader(_MESSAGES.values())
    for message in samples:
        reader.feed(frame(message))
        if reader.next() != message:
            raise ProtocolError(f"{message.op} does not survive its own round trip")
    from_json(TemplateConfig, to_json(TemplateConfig(helpers=[], preload=[], control_fd=0)))


def frame(message: Message) -> bytes:
    """One message as a frame of the worker's pipes: its length, then its JSON."""
    body = encode(message)
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Splits the bytes read from a pipe into messages of the ``expected`` kinds."""

    def __init__(self, expected: Iterable[type[Message]]) -> None:
        self.expected = tuple(expected)
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Message | None:
        """The next whole message, or None until more bytes are fed."""
        if len(self._buf) < HEADER.size:
            return None
        size = HEADER.unpack_from(self._buf)[0]
        if size > MAX_FRAME:
            raise FrameTooLarge(f"a frame of {size} bytes (at most {MAX_FRAME})")
        if len(self._buf) < HEADER.size + size:
            return None
        body = bytes(self._buf[HEADER.size : HEADER.size + size])
        del self._buf[: HEADER.size + size]
        return decode(body, self.expected)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the pipe ``fd`` (a pipe takes at most its capacity at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Channel:
    """The worker's end of its pipes: blocking reads of the host's messages, whole frames written under a lock
    (the cell's output is sent from other threads than its result)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self._reader = FrameReader(TO_WORKER)
        self._lock = threading.Lock()

    def read(self) -> Message | None:
        """The host's next message (None: the host closed the pipe)."""
        while (message := self._reader.next()) is None:
            data = os.read(self.rfd, 1 << 20)
            if not data:
                return None
            self._reader.feed(data)
        return message

    def write(self, message: Message) -> None:
        data = frame(message)
        with self._lock:
            write_all(self.wfd, data)
