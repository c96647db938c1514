"""`Changes`: the signal every page follows. Whoever changes what a page shows bumps it; followers wait for a new
version, in a thread (`wait`, as a `threading.Condition`) or on the event loop (`changed_since`, holding no thread)."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Changes(threading.Condition):
    """A condition with a counter: whoever changes what a page shows bumps it; followers wait for a new value."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def bump(self) -> None:
        with self:
            self.version += 1
            self.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits there any more
                loop.call_soon_threadsafe(event.set)

    async def changed_since(self, version: int, timeout: float) -> int:
        """Wait (without a thread) until the version differs from `version`, or `timeout` seconds; the version."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self:
            if self.version != version:
                return self.version
            self._async_waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            with self:
                self._async_waiters.discard(waiter)
        return self.version
