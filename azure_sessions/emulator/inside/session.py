"""A forked worker becoming one session's: the set-up sequence, run before any user code.

``enter`` reads the worker's configuration, one step per line, and keeps none of it: what the kernel needs later is
handed to it by value, so nothing user code can reach holds the configuration (or the host pids in it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

from .capture import FdCapture
from .kernel import Kernel
from .limits import apply_limits, lower_priority
from .protocol import SUPERVISOR_FD, Channel, Confinement, Namespaces, PathMapping, Policy, WorkerConfig

HELPERS = ("namespaces", "policy", "confine", "pathmap", "strays")
"""The modules a tier may ask the template to load (before any sandbox closes: they live beside this file)."""


class Helpers:
    """The helper modules of the template's tier, loaded once; those the tier does not use are None."""

    def __init__(self, names: list[str]) -> None:
        unknown = sorted(set(names) - set(HELPERS))
        if unknown:
            raise ValueError(f"unknown helper modules {unknown}; known: {HELPERS}")
        loaded = {name: importlib.import_module(f"{__package__}.{name}") for name in names}
        self.namespaces: ModuleType | None = loaded.get("namespaces")
        self.policy: ModuleType | None = loaded.get("policy")
        if self.policy is not None:
            importlib.import_module("pyseccomp")  # once, here: every worker builds its filter with it
        self.confine: ModuleType | None = loaded.get("confine")
        self.strays: ModuleType | None = loaded.get("strays")
        # The path mapping is installed at once, before IPython keeps its own reference to ``io.open``.
        self.paths = loaded["pathmap"].install() if "pathmap" in loaded else None

    def require(self, name: str) -> ModuleType:
        module = getattr(self, name)
        if module is None:
            raise RuntimeError(f"the worker's configuration needs {name}.py, which its tier did not load")
        return module


def enter(kernel: Kernel, helpers: Helpers, config: WorkerConfig) -> None:
    """Become this session's worker: fds 0/1 are its protocol pipes and fd 2 its log when this starts."""
    channel, log_fd = take_protocol_pipes()
    prefer_to_be_killed_under_memory_pressure()
    enter_namespaces(helpers, config.namespaces)
    apply_limits(config.uid, config.gid, config.limits)
    lower_priority(config.nice)
    policy = install_policy(helpers, config.policy)
    confined = confine(helpers, config.confinement)
    out, err = capture_output(config.max_stream_bytes)
    map_paths(helpers, config.path_mapping)
    os.chdir(config.data_dir)
    kernel.attach(channel, log_fd, out, err, strays=helpers.strays, whole_pid_namespace=config.whole_pid_namespace,
                  max_result_chars=config.max_result_chars, max_image_bytes=config.max_image_bytes, policy=policy,
                  confined=confined)  # fmt: skip


_setup_log = 2


def setup_log() -> int:
    """Where a failure of the set-up is written: the log pipe (fd 2 at first, then its private copy)."""
    return _setup_log


def take_protocol_pipes() -> tuple[Channel, int]:
    """Private copies of the protocol's pipes and of the log pipe (the kernel closes it before any user code runs);
    fd 0 then reads nothing."""
    global _setup_log
    channel = Channel(os.dup(0), os.dup(1))
    log_fd = _setup_log = os.dup(2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return channel, log_fd


def prefer_to_be_killed_under_memory_pressure() -> None:
    """Under memory pressure the kernel ends a session, not the template."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("500")


def enter_namespaces(helpers: Helpers, namespaces: Namespaces | None) -> None:
    """The bubblewrap tier: the worker's own mount, network, IPC and UTS namespaces."""
    if namespaces is not None:
        helpers.require("namespaces").enter(guid=namespaces.guid, tmp_dir=namespaces.tmp_dir,
                                            shm_dir=namespaces.shm_dir, drop_capabilities=namespaces.drop_capabilities,
                                            tmp_binds=namespaces.tmp_binds)  # fmt: skip


def install_policy(helpers: Helpers, policy: Policy | None) -> dict | None:
    """Every tier: the seccomp policy (``no_new_privs`` first), for good; returns what was installed. The protected
    pids go into the filter and nowhere else."""
    if policy is None:
        return None
    module = helpers.require("policy")
    rules = module.TierRules(policy.tier, policy.sockets, policy.sysv_ipc, policy.guard_signals)
    return module.install(rules, protected_pids=policy.protected_pids,
                          notify_sock=SUPERVISOR_FD if policy.supervised else None)  # fmt: skip


def confine(helpers: Helpers, confinement: Confinement | None) -> dict | None:
    """The Landlock tier: Landlock, for good; returns what was applied."""
    if confinement is None:
        return None
    return helpers.require("confine").confine(read_only=confinement.read_only, read_write=confinement.read_write,
                                              devices=confinement.devices)  # fmt: skip


def capture_output(limit: int) -> tuple[FdCapture, FdCapture]:
    """Fds 1 and 2 become pipes drained per cell."""
    return FdCapture(1, limit), FdCapture(2, limit)


def map_paths(helpers: Helpers, mapping: PathMapping | None) -> None:
    """No mount namespace: ``/mnt/data`` and ``/tmp`` mapped for Python's file APIs."""
    if mapping is not None:
        if helpers.paths is None:
            raise RuntimeError("the worker's configuration maps paths, but its tier did not load pathmap.py")
        helpers.paths.set(mapping.virtual, own=mapping.own)
