"""A worker's private uid, resource limits and scheduling priority, set before any user code runs."""

from __future__ import annotations

import os
import resource
import signal

from .protocol import Rlimits

_RLIMITS = (
    ("memory_bytes", "RLIMIT_AS"),
    ("cpu_seconds", "RLIMIT_CPU"),
    ("max_processes", "RLIMIT_NPROC"),
    ("file_size_bytes", "RLIMIT_FSIZE"),
    ("core_bytes", "RLIMIT_CORE"),
)


def apply_limits(uid: int | None, gid: int | None, limits: Rlimits) -> None:
    """Change to ``uid``/``gid`` (when given: a root emulator's private uid per worker), then set ``limits``."""
    if gid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
    if uid is not None:
        os.setresuid(uid, uid, uid)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the file-size limit fail with EFBIG
    for field, name in _RLIMITS:
        value = getattr(limits, field)
        if value is not None and hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))


def lower_priority(increment: int) -> None:
    """Add ``increment`` to the worker's nice value (inherited by every process it starts), so the server and the
    template keep the CPU they need while sessions compute."""
    if increment > 0:
        os.nice(increment)
