"""`Changes`: the signal every page follows. Whoever changes what a page shows bumps it; followers wait for a new
version."""

from __future__ import annotations

import threading


class Changes(threading.Condition):
    """A condition with a counter: whoever changes what a page shows bumps it; followers wait for a new value."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def bump(self) -> None:
        with self:
            self.version += 1
            self.notify_all()
