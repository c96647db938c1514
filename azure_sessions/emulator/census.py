"""Host side: which processes belong to which session, kept current from /proc while reading only what changed.

A process never joins a session: its session id changes only by ``setsid``, to its own pid, and the seccomp policy
refuses even that to sessions' processes. So once a process is classified (in session S, or in none watched) it
stays so until it ends, and a count needs to read the stat file only of processes it has not seen before. A pid
reused by a new process is told apart by the inode of its ``/proc/<pid>`` directory, which procfs gives each new
process afresh. A count is then one listing of ``/proc`` (about 0.6 ms for 330 processes, against 8 ms to read
every stat file on a busy host) plus a stat file per new process and the task list of each member.

One census per thread that counts (it is not locked): the process supervisor and the watchdog have their own.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from .inside import strays


class Census:
    """The sessions of the processes on this host, as of the last :meth:`members` call."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[int, int]] = {}  # pid -> (inode of /proc/<pid>, its session id)

    def members(self, session_ids: Collection[int]) -> dict[int, list[int]]:
        """The live pids (zombies included) of each of ``session_ids`` that has any."""
        listing: dict[int, int] = {}
        with os.scandir("/proc") as entries:
            for entry in entries:
                if entry.name.isdigit():
                    listing[int(entry.name)] = entry.inode()
        known = self._known
        for pid in [pid for pid, (inode, _) in known.items() if listing.get(pid) != inode]:
            del known[pid]  # ended, or its pid now names another process
        found: dict[int, list[int]] = {}
        for pid, inode in listing.items():
            entry = known.get(pid)
            if entry is None:
                stat = strays.read_stat(pid)
                if stat is None:
                    continue  # ended since the listing
                entry = known[pid] = (inode, stat.session)
            if entry[1] in session_ids:
                found.setdefault(entry[1], []).append(pid)
        return found

    def tasks(self, session_ids: Collection[int]) -> dict[int, int]:
        """Tasks (threads included; a zombie counts until it is reaped, as for ``RLIMIT_NPROC``) of each of
        ``session_ids`` that has any."""
        counts: dict[int, int] = {}
        for session, pids in self.members(session_ids).items():
            total = 0
            for pid in pids:
                try:
                    total += max(len(os.listdir(f"/proc/{pid}/task")), 1)
                except OSError:
                    total += 1  # ended since, or a zombie without a task list: one at most
            counts[session] = total
        return counts
