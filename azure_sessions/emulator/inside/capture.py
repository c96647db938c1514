"""A worker's file descriptors 1 and 2, captured one cell at a time, and streamed while the cell runs.

Each fd points at a pipe that a thread drains, so output written by subprocesses (``!cmd``, ``os.system``) is captured
per cell like Python's own and can never reach the protocol's pipes. Each stream keeps at most ``limit`` bytes of a
cell (its head, and a short tail); the rest is counted and said.

Live output: while a cell runs with a ``live`` callback, the draining thread hands it the cell's text as it comes,
coalesced to at most one call per ``LIVE_INTERVAL`` (the first text after a quiet spell goes at once), and only
within the cell's ``limit``. What it handed over, joined, is the head of what ``collect`` returns; the rest of the
head is handed over before ``collect`` returns, so it always precedes the cell's result.
"""

from __future__ import annotations

import codecs
import os
import select
import threading
import time
from collections.abc import Callable

LIVE_INTERVAL = 0.1
"""Seconds between two live-output calls of one stream, at least."""
_TAIL = 64  # kept past the limit: the end-of-cell marker may straddle reads


class FdCapture:
    """Points file descriptor ``fd`` at a pipe and collects what is written to it, one cell at a time."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self._r, self._w = os.pipe()
        os.dup2(self._w, fd)
        self._buf = bytearray()
        self._dropped = 0
        self._marker: bytes | None = None
        self._collected: tuple[bytes, int] | None = None
        self._cond = threading.Condition()
        # live output of the running cell
        self._live: Callable[[str], None] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._sent = 0  # bytes of the cell's head handed to ``_live``
        self._last_live = 0.0
        threading.Thread(target=self._drain, name=f"capture-{fd}", daemon=True).start()

    def begin(self, live: Callable[[str], None] | None) -> None:
        """A cell starts: hand its text to ``live`` as it comes (None: only collect it)."""
        with self._cond:
            self._live, self._sent = live, 0
            self._decoder.reset()
        self.restore()

    def restore(self) -> None:
        """Re-point the fd at the capture pipe in case user code closed or redirected it."""
        os.dup2(self._w, self.fd)

    def collect(self, seq: int) -> str:
        """Everything the cell ``seq`` wrote (up to the limit), once the pipe has been drained up to its end."""
        marker = b"\x1e\x1f<end-of-cell %d>\x1f\x1e" % seq
        with self._cond:
            self._marker, self._collected = marker, None
        try:
            self.restore()
            os.write(self._w, marker)
        except OSError:
            pass
        with self._cond:
            self._cond.wait_for(lambda: self._collected is not None, timeout=5.0)
            data, dropped = self._collected or (bytes(self._buf), self._dropped)
            if self._collected is None:
                self._buf.clear()
                self._dropped, self._marker, self._live = 0, None, None
        text = data.decode("utf-8", errors="replace")
        if dropped:
            text += f"\n[... {dropped} bytes of output truncated by the emulator ...]\n"
        return text

    # -- the draining thread -------------------------------------------------------------------------------------
    def _drain(self) -> None:
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        while True:
            wait = self._live_due()
            ready = wait != 0 and poller.poll(None if wait is None else int(wait * 1000) + 1)
            if ready:
                data = os.read(self._r, 65536)
                if not data:
                    return
                self._take(data)
            self._send_live()

    def _take(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            marker = self._marker
            idx = self._buf.find(marker) if marker is not None else -1
            if idx < 0:
                over = len(self._buf) - self.limit - _TAIL
                if over > 0:  # keep the head and a short tail
                    del self._buf[self.limit : self.limit + over]
                    self._dropped += over
                return
            live, self._live = self._live, None
            rest = bytes(self._buf[self._sent : min(idx, self.limit)]) if live is not None else b""
            collected = (bytes(self._buf[:idx]), self._dropped)
            del self._buf[: idx + len(marker)]
            self._dropped, self._marker = 0, None
        if live is not None:  # the rest of the cell's head goes before its result
            self._hand_over(live, self._decoder.decode(rest, final=True))
        with self._cond:
            self._collected = collected
            self._cond.notify_all()

    def _live_due(self) -> float | None:
        """Seconds until the pending live text may be handed over (0: now); None when there is none."""
        with self._cond:
            if self._live is None or self._marker is not None or self._sent >= min(len(self._buf), self.limit):
                return None
            return max(0.0, self._last_live + LIVE_INTERVAL - time.monotonic())

    def _send_live(self) -> None:
        """Hand the running cell's text not yet handed over (within the limit) to its callback, when it is due."""
        with self._cond:
            live = self._live
            stop = min(len(self._buf), self.limit)
            if live is None or self._marker is not None or self._sent >= stop:
                return
            if time.monotonic() < self._last_live + LIVE_INTERVAL:
                return
            chunk = bytes(self._buf[self._sent : stop])
            self._sent = stop
        self._hand_over(live, self._decoder.decode(chunk))

    def _hand_over(self, live: Callable[[str], None], text: str) -> None:
        if not text:
            return
        self._last_live = time.monotonic()
        try:
            live(text)
        except Exception:  # the host is gone or its pipe broke: the cell's result says the rest
            with self._cond:
                self._live = None
