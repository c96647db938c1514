"""Host side: what one emulator keeps watching over its sessions' share of the machine, in one place.

Made by the emulator's :class:`~azure_sessions.emulator.launcher.Launcher` and closed with it:

- the **watchdog** (``watchdog.py``): every session's tasks, memory and disk held to the :class:`SessionBudget`, and
  its scheduling group's nice value, from one thread. A worker is watched once it is ready and released when it is
  killed; what the watchdog did goes to the worker (``on_exceeded``), which tells the running cell;
- the **process supervisor** (``supervisor.py``), only with the exact task cap (``Limits(exact_process_cap=True)``):
  a worker is supervised from its fork, since its first process-creating call after its policy is installed waits
  for the supervisor's answer.

Without the exact cap, a session's task budget is the watchdog's (a tick late, changing no system call), under the
workers' uid-wide ``RLIMIT_NPROC`` ceiling (``Launcher``); as root each worker's private uid makes it exact anyway.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from .budgets import SessionBudget
from .supervisor import ProcessSupervisor
from .watchdog import Exceeded, Usage, Watchdog


class SessionGuards:
    """The watchdog (and, with the exact task cap, the process supervisor) of one emulator."""

    def __init__(self, budget: SessionBudget, *, exact_process_cap: bool = False) -> None:
        self.budget = budget
        self.watchdog = Watchdog()
        self.supervisor = ProcessSupervisor() if exact_process_cap and budget.tasks is not None else None

    def supervisor_channel(self) -> tuple[socket.socket, socket.socket] | None:
        """A new worker's socket pair to the supervisor (ours, the worker's), or None without the exact cap."""
        if self.supervisor is None:
            return None
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def supervise(self, key: object, channel: socket.socket, session_id: int) -> None:
        """Cap the tasks of the worker ``key`` (session id ``session_id``), whose listener comes over ``channel``."""
        assert self.supervisor is not None and self.budget.tasks is not None
        self.supervisor.watch(key, channel, session_id, self.budget.tasks)

    def watch(self, key: object, *, worker_pid: int, dirs: Iterable[Path | None],
              on_exceeded: Callable[[Exceeded], None], busy: Callable[[], bool]) -> None:  # fmt: skip
        """Hold the ready worker ``key`` (its session id is its pid) to the budget; ``dirs``: where its files are."""
        self.watchdog.watch(key, worker_pid=worker_pid, dirs=[d for d in dirs if d is not None], budget=self.budget,
                            on_exceeded=on_exceeded, busy=busy)  # fmt: skip

    def release(self, key: object) -> None:
        """Stop watching ``key`` (its worker is being killed)."""
        self.watchdog.unwatch(key)
        if self.supervisor is not None:
            self.supervisor.unwatch(key)

    def usage(self, key: object, *, fresh_disk: bool = False) -> Usage | None:
        """What ``key`` held at the last measurement (its disk measured now with ``fresh_disk``); None: not watched."""
        return self.watchdog.measure_now(key) if fresh_disk else self.watchdog.usage(key)

    def info(self) -> dict[str, object]:
        """What ``.emulator/info`` says of the budget."""
        budget = self.budget
        return {"tasks": budget.tasks, "memoryMb": budget.memory_mb, "diskMb": budget.disk_mb, "nice": budget.nice}

    def close(self) -> None:
        self.watchdog.close()
        if self.supervisor is not None:
            self.supervisor.close()
