"""End what a timed-out cell left running (stdlib only: loaded in the sandbox, imported by the host).

It also holds the one reader of ``/proc/<pid>/stat`` (:func:`read_stat`, :func:`process_table`) that the emulator,
the benchmarks and the tests use.

A cell interrupted at its timeout may leave processes behind: a fork bomb held at the process limit, a busy
background job. They would burn CPU until the session ends. Every process started since the cell began is killed,
round after round of SIGKILL until none is left (a process forked by one being killed shows up in the next round; the
process limits bound how many there can be, and the dead hold their slots until they are reaped). Nothing is ever
stopped: a process stopped by whoever ends it would stay stopped for good if that one died before the kill (the
server, at any moment). Which processes are candidates depends on the tier:

- bubblewrap: every process in the sandbox's PID namespace (the worker does it, from inside);
- unisolated: the worker's descendants (the worker does it);
- Landlock: every process whose session id is the worker's (seccomp refuses ``setsid``, so none can leave it). The
  worker cannot read ``/proc`` there, so the host does it, and also ends the whole session this way when the
  sandbox is deleted.

Processes that existed when the cell began (a server an earlier cell started) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

_MAX_ROUNDS = 200
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class ProcStat(NamedTuple):
    """What is read of a process's ``/proc/<pid>/stat``."""

    ppid: int
    start: int  # when it started, in clock ticks since boot
    state: str  # one letter: R running, S sleeping, T stopped, Z zombie, X dead, ...
    session: int  # its session id
    cpu_ticks: int  # user and system time, in clock ticks

    @property
    def ended(self) -> bool:
        """It runs no more (a zombie, or dead), though it may still wait to be reaped."""
        return self.state in ("Z", "X")


ProcessTable = dict[int, ProcStat]
Selector = Callable[[ProcessTable], set[int]]


def read_stat(pid: int | str) -> ProcStat | None:
    """Process ``pid``'s stat, or None when it is gone or cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
        return ProcStat(
            ppid=int(fields[1]),
            start=int(fields[19]),
            state=fields[0].decode("ascii"),
            session=int(fields[3]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
        )
    except (OSError, IndexError, ValueError):
        return None


def boot_ticks() -> int:
    """Now, in the clock ``/proc/<pid>/stat`` gives process start times in (ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS_PER_SECOND)


class Mark:
    """What existed when a cell began: the time (clock ticks since boot) and the candidate processes alive then."""

    __slots__ = ("pids", "ticks")

    def __init__(self, whole_namespace: bool) -> None:
        self.ticks = boot_ticks()
        self.pids = _existing(whole_namespace)

    def is_new(self, pid: int, start: int) -> bool:
        """Started after the mark: a pid unknown then, or one whose start is a later tick (a reused pid)."""
        return pid not in self.pids or start > self.ticks


def _existing(whole_namespace: bool) -> frozenset[int]:
    """Cheap enough for every cell: a directory listing in the sandbox's PID namespace, else the worker's
    descendants through /proc/<pid>/task/<tid>/children (usually none)."""
    me = os.getpid()
    if whole_namespace:
        return frozenset(int(e) for e in os.listdir("/proc") if e.isdigit()) - {1, me}
    found: set[int] = set()
    stack = [me]
    while stack:
        try:
            kids = children(stack.pop())
        except FileNotFoundError:  # a kernel without /proc/.../children: fall back to a full scan
            return frozenset(descendants(me, process_table()))
        stack.extend(c for c in kids if c not in found)
        found.update(kids)
    return frozenset(found)


def children(pid: int) -> list[int]:
    """The children of ``pid``, from /proc/<pid>/task/<tid>/children ([] for a process that is gone). Raises
    FileNotFoundError where the kernel does not offer those files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            raise
        except OSError:
            continue
    return found


def process_table() -> ProcessTable:
    """Every visible process's stat, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_stat(entry)) is not None:
            table[int(entry)] = stat
    return table


def descendants(root: int, table: ProcessTable) -> set[int]:
    """The pids of ``root``'s children, their children, and so on."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def in_session(session_id: int, exclude: frozenset[int] = frozenset()) -> Selector:
    """Every process whose session id is ``session_id``, but ``exclude``."""
    return lambda table: {pid for pid, stat in table.items() if stat.session == session_id} - exclude


def _in_sandbox(whole_namespace: bool) -> Selector:
    me = os.getpid()
    return (lambda table: set(table) - {1, me}) if whole_namespace else (lambda table: descendants(me, table))


def end_processes(select: Selector, is_new: Callable[[int, int], bool] = lambda pid, start: True) -> set[int]:
    """SIGKILL every live process ``select`` picks and ``is_new`` accepts, round after round until none is left;
    returns their pids (all dead when this returns, perhaps not yet reaped). Never SIGSTOP (see above)."""
    ended: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        table = process_table()
        found = {p for p in select(table) if not table[p].ended and is_new(p, table[p].start)}
        if not found:
            break
        _signal_all(found, signal.SIGKILL)
        ended |= found
        time.sleep(0.002)  # a child still being forked when we looked shows up in the next round
    return ended


def reap(pids: set[int], wait: bool = True) -> None:
    """Collect those of ``pids`` that are this process's children (the others belong to someone else). The host
    passes ``wait=False``: a pid reused by one of its own children in the meantime must not block it."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0 if wait else os.WNOHANG)


def end_strays(mark: Mark, whole_namespace: bool) -> int:
    """Inside the sandbox: end every candidate started since ``mark``; returns how many."""
    ended = end_processes(_in_sandbox(whole_namespace), mark.is_new)
    reap(ended)  # our own children; the others are reaped by their parent or the namespace's init
    return len(ended)


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
