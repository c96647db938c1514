"""Live output of one execution, as the emulator's ``.emulator/output`` route serves it (an emulator extension: the
service streams nothing).

An :class:`OutputFeed` keeps what a running cell wrote, in order, as the worker hands it over (bounded per stream),
and wakes its readers as it grows. Readers read it from the start, so one that arrives late misses nothing; a feed
made before its execution exists (a reader came first) waits to be claimed by it. The pool owns the feeds
(``EmulatedPool.open_output``); this module knows nothing of sessions or HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .tiers import MAX_STREAM_BYTES

MAX_READERS = 4
"""Readers of one execution's output at once."""
_COALESCE_CHARS = 64 * 1024
"""Text of one stream written in a row joins the chunk before it while that one is shorter than this."""
STREAMS = ("stdout", "stderr")
FINISHED, NOT_FOUND, NOT_RUN = "finished", "not-found", "not-run"
"""How a feed ends: its execution finished; no such execution appeared in time; the execution was refused before
it ran (a full pool)."""

Waker = Callable[[], None]


class OutputFeed:
    """One execution's output, in the order it was written: ``(stream, text)`` chunks, at most ``limit`` characters
    per stream (what the worker streams is already capped at its output limit; this bounds the host's copy too).
    Thread-safe; wakers are called outside the lock, from the writing thread."""

    def __init__(self, limit: int = MAX_STREAM_BYTES) -> None:
        self._lock = threading.Lock()
        self._chunks: list[tuple[str, str]] = []
        self._sizes = dict.fromkeys(STREAMS, 0)
        self._limit = limit
        self._wakers: list[Waker] = []
        self.ended: str | None = None
        self.claimed = False  # an execution writes to it (else it waits for one, made by a reader)

    @classmethod
    def of_finished(cls, stdout: str, stderr: str) -> OutputFeed:
        """The feed of an execution that has ended and whose live feed is gone: its final output, then the end."""
        feed = cls(limit=max(len(stdout), len(stderr)))
        feed.claimed = True
        for stream, text in zip(STREAMS, (stdout, stderr), strict=True):
            if text:
                feed.append(stream, text)
        feed.end(FINISHED)
        return feed

    @property
    def readers(self) -> int:
        with self._lock:
            return len(self._wakers)

    def append(self, stream: str, text: str) -> None:
        """Text the cell wrote to ``stream``; what is past the stream's limit is dropped (the result says so)."""
        with self._lock:
            room = self._limit - self._sizes.get(stream, 0)
            if self.ended is not None or room <= 0 or not text:
                return
            text = text[:room]
            self._sizes[stream] = self._sizes.get(stream, 0) + len(text)
            if self._chunks and self._chunks[-1][0] == stream and len(self._chunks[-1][1]) < _COALESCE_CHARS:
                self._chunks[-1] = (stream, self._chunks[-1][1] + text)  # coalesced: one line on the wire
            else:
                self._chunks.append((stream, text))
            wakers = list(self._wakers)
        _wake(wakers)

    def end(self, how: str = FINISHED) -> None:
        """No more text will come (``how``: FINISHED, NOT_FOUND or NOT_RUN); readers finish what they have."""
        with self._lock:
            if self.ended is not None:
                return
            self.ended = how
            wakers = list(self._wakers)
        _wake(wakers)

    def attach(self, waker: Waker) -> bool:
        """Add a reader, woken (``waker()``) when the feed grows or ends; False when it has MAX_READERS already."""
        with self._lock:
            if len(self._wakers) >= MAX_READERS:
                return False
            self._wakers.append(waker)
            return True

    def detach(self, waker: Waker) -> None:
        with self._lock:
            if waker in self._wakers:
                self._wakers.remove(waker)

    def read(self, position: tuple[int, int]) -> tuple[list[tuple[str, str]], tuple[int, int], str | None]:
        """What was written since ``position`` (``(0, 0)`` at first), the position to read from next, and how the
        feed ended (None while it goes on). The last chunk may grow in place: a position counts its characters."""
        index, offset = position
        with self._lock:
            new = [(stream, text[offset:] if i == index else text) for i, (stream, text) in
                   enumerate(self._chunks[index:], start=index)]  # fmt: skip
            new = [(stream, text) for stream, text in new if text]
            if self._chunks:
                position = (len(self._chunks) - 1, len(self._chunks[-1][1]))
            return new, position, self.ended


def _wake(wakers: list[Waker]) -> None:
    for waker in wakers:
        waker()


class OutputReader:
    """One reader of a feed (see ``EmulatedPool.open_output``): reads it from the start; ``close`` lets it go."""

    def __init__(self, feed: OutputFeed, waker: Waker, on_close: Callable[[OutputReader], None]) -> None:
        self.feed, self.waker = feed, waker
        self._position = (0, 0)
        self._on_close: Callable[[OutputReader], None] | None = on_close

    def read(self) -> tuple[list[tuple[str, str]], str | None]:
        """What was written since the last read, and how the feed ended (None while it goes on)."""
        chunks, self._position, ended = self.feed.read(self._position)
        return chunks, ended

    def close(self) -> None:
        self.feed.detach(self.waker)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
