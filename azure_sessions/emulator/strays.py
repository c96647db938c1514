"""Inside the sandbox (standalone, stdlib only; loaded by worker.py): end what a timed-out cell left running.

A cell interrupted at its timeout may leave processes behind: a fork bomb held at the process limit, a busy
background job. They would burn CPU until the session ends. Every process started since the cell began is stopped
(SIGSTOP, so nothing can fork any more), then killed, and the worker's own children are reaped. Under bubblewrap
that is every such process in the sandbox's PID namespace; unisolated, only the worker's descendants. Processes
that existed when the cell began (a server an earlier cell started) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

_MAX_ROUNDS = 100


class Mark:
    """What existed when a cell began: the time (clock ticks since boot) and the candidate processes alive then."""

    __slots__ = ("pids", "ticks")

    def __init__(self, whole_namespace: bool) -> None:
        self.ticks = int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
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
                return frozenset(_descendants(me, _process_table()))
            except OSError:
                continue
            stack.extend(c for c in children if c not in found)
            found.update(children)
    return frozenset(found)


def _process_table() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, start time in ticks, state letter) for every visible process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), int(fields[19]), fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(root: int, table: dict[int, tuple[int, int, bytes]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _live_new(mark: Mark, whole_namespace: bool) -> set[int]:
    """Live (not yet dead) candidates started since ``mark``: never the worker itself nor the namespace's init."""
    me = os.getpid()
    table = _process_table()
    pids = set(table) - {1, me} if whole_namespace else _descendants(me, table)
    return {pid for pid in pids if table[pid][2] not in (b"Z", b"X") and mark.is_new(pid, table[pid][1])}


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def end_strays(mark: Mark, whole_namespace: bool) -> int:
    """Stop, then kill, every live candidate started since ``mark``, until none is left; returns how many."""
    ended: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        stopped = _live_new(mark, whole_namespace)
        if not stopped:
            break
        _signal_all(stopped, signal.SIGSTOP)
        while fresh := _live_new(mark, whole_namespace) - stopped:  # stopped processes cannot fork: converges
            _signal_all(fresh, signal.SIGSTOP)
            stopped |= fresh
        _signal_all(stopped, signal.SIGKILL)
        ended |= stopped
        time.sleep(0.005)  # a child still being forked when we looked shows up in the next round
    for pid in ended:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)  # our own children; the others are reaped by their parent or the namespace's init
    return len(ended)
