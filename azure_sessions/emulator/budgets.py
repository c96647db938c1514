"""What one session may hold of the machine: the defaults, and why (host side).

``RLIMIT_AS``, ``RLIMIT_NPROC`` and friends bound one process, or one uid, and in the Landlock tier without root every
session shares the server's uid. A public playground needs bounds per *session*, which no rlimit gives and which,
without cgroups (a Space has none we may write), the host keeps itself:

- **tasks** (processes and threads, zombies included, counted as ``RLIMIT_NPROC`` counts them): 64 per session,
  enforced by the watchdog (``watchdog.py``), which ends the session's processes past it within a tick, under a
  uid-wide ``RLIMIT_NPROC`` ceiling for all workers (the uid's tasks at start plus the sessions' budgets and a
  margin; the template keeps its own higher limit). The process supervisor (``supervisor.py``) answers EAGAIN at
  the cap instead, exactly, through seccomp user notification, at the price of EINTR from some ``fork`` calls
  (see there): opt-in. An idle worker uses about 4 (its main
  thread, the control thread, two output readers); numpy's BLAS adds one thread per core (2 on a Space's basic
  hardware); a ``multiprocessing`` pool of 8 with BLAS threads fits with room to spare, a fork bomb stops at 64.
  With 100 sessions (the pool's limit) that is at most 6,400 tasks, below the uid-wide limits the template needs to
  keep forking workers. Workers reap orphans promptly, and what the watchdog ended past the budget (a zombie holds
  a task until reaped). As root each worker's own uid makes ``RLIMIT_NPROC`` this budget, exactly.
- **memory**: 2048 MiB per session, summed over its processes (proportional set size, so pages a forked worker
  still shares with the template, or a child with its parent, count once). Enough for pandas on a few hundred MB of
  CSV and any matplotlib figure; eight sessions at their full budget fit a 16 GB Space. Enforced by the watchdog
  (``watchdog.py``), which ends the session's largest process past it, as the kernel's OOM killer would.
  ``RLIMIT_AS`` (4 GiB per process) stays as the immediate backstop, and the kernel prefers workers (``oom_score_adj`` 500) over the server when the machine itself runs out.
- **disk**: 2048 MiB per session, the blocks its files actually hold (``st_blocks``: a sparse 1 GiB file holding
  nothing is not 1 GiB) across ``/mnt/data`` and its scratch directory (``/tmp``, ``HOME``). Past it the watchdog
  interrupts the writer and the host refuses uploads until files are deleted. ``RLIMIT_FSIZE`` (1 GiB per file)
  stays.
- **CPU**: no quota (that needs cgroups). Each session has its own session id, hence its own scheduling group
  where ``kernel.sched_autogroup_enabled`` is 1 and the server runs in the root CPU cgroup; the watchdog sets that
  group's nice to +10 (``/proc/<pid>/autogroup``), and the worker runs at nice +10 itself (which is what counts
  where autogroups are off or ineffective, as in a container's own CPU cgroup), so the server stays responsive
  while sessions compute. ``RLIMIT_CPU`` (3600 s per process) stays, and every execution still has its timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class SessionBudget:
    """One session's share of the machine (see the module's docstring for the reasoning); None: no budget."""

    tasks: int | None = 64
    memory_mb: int | None = 2048
    disk_mb: int | None = 2048
    nice: int = 10  # of the session's processes and of its scheduling group

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * MIB

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk_mb is None else self.disk_mb * MIB
