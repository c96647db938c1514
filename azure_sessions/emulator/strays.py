"""End what a timed-out cell left running (standalone, stdlib only: loaded by worker.py, imported by the host).

A cell interrupted at its timeout may leave processes behind: a fork bomb held at the process limit, a busy
background job. They would burn CPU until the session ends. Every process started since the cell began is stopped
(SIGSTOP, so nothing can fork any more), then killed. Which processes are candidates depends on the tier:

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

_MAX_ROUNDS = 100
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

ProcessTable = dict[int, tuple[int, int, bytes, int]]  # pid -> (parent pid, start ticks, state, session id)
Selector = Callable[[ProcessTable], set[int]]


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
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except FileNotFoundError:  # a kernel without /proc/.../children: fall back to a full scan
                return frozenset(_descendants(me, process_table()))
            except OSError:
                continue
            stack.extend(c for c in children if c not in found)
            found.update(children)
    return frozenset(found)


def process_table() -> ProcessTable:
    """pid -> (parent pid, start time in ticks, state letter, session id) for every visible process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), int(fields[19]), fields[0], int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(root: int, table: ProcessTable) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def in_session(session_id: int, exclude: frozenset[int] = frozenset()) -> Selector:
    """Every process whose session id is ``session_id``, but ``exclude``."""
    return lambda table: {pid for pid, row in table.items() if row[3] == session_id} - exclude


def _in_sandbox(whole_namespace: bool) -> Selector:
    me = os.getpid()
    return (lambda table: set(table) - {1, me}) if whole_namespace else (lambda table: _descendants(me, table))


def end_processes(select: Selector, is_new: Callable[[int, int], bool] = lambda pid, start: True) -> set[int]:
    """Stop, then kill, every live process ``select`` picks and ``is_new`` accepts, until none is left; returns
    their pids (all dead when this returns, perhaps not yet reaped)."""
    ended: set[int] = set()

    def live() -> set[int]:
        table = process_table()
        return {p for p in select(table) if table[p][2] not in (b"Z", b"X") and is_new(p, table[p][1])}

    for _ in range(_MAX_ROUNDS):
        stopped = live()
        if not stopped:
            break
        _signal_all(stopped, signal.SIGSTOP)
        while fresh := live() - stopped:  # stopped processes cannot fork: converges
            _signal_all(fresh, signal.SIGSTOP)
            stopped |= fresh
        _signal_all(stopped, signal.SIGKILL)
        ended |= stopped
        time.sleep(0.005)  # a child still being forked when we looked shows up in the next round
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
