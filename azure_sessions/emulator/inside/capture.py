"""A worker's file descriptors 1 and 2, captured one cell at a time.

Each fd points at a pipe that a thread drains, so output written by subprocesses (``!cmd``, ``os.system``) is captured
per cell like Python's own and can never reach the protocol's pipes. Each stream keeps at most ``limit`` bytes of a
cell (its head, and a short tail); the rest is counted and said.
"""

from __future__ import annotations

import os
import threading


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
        threading.Thread(target=self._drain, name=f"capture-{fd}", daemon=True).start()

    def _drain(self) -> None:
        while True:
            data = os.read(self._r, 65536)
            if not data:
                return
            with self._cond:
                self._buf += data
                marker = self._marker
                if marker is not None:
                    idx = self._buf.find(marker)
                    if idx >= 0:
                        self._collected = (bytes(self._buf[:idx]), self._dropped)
                        del self._buf[: idx + len(marker)]
                        self._dropped, self._marker = 0, None
                        self._cond.notify_all()
                        continue
                over = len(self._buf) - self.limit - 64
                if over > 0:  # keep the head and a short tail (the marker may straddle reads)
                    del self._buf[self.limit : self.limit + over]
                    self._dropped += over

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
                self._dropped, self._marker = 0, None
        text = data.decode("utf-8", errors="replace")
        if dropped:
            text += f"\n[... {dropped} bytes of output truncated by the emulator ...]\n"
        return text
