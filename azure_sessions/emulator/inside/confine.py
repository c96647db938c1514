"""Inside the sandbox (loaded by the Landlock tier's template): the unprivileged isolation tier's Landlock domain.

For hosts where no user namespace can be created (containers, Hugging Face Spaces), so bubblewrap cannot start. A
worker applies this to itself before any user code runs, right after the seccomp policy every tier installs
(``policy.py``: no sockets, no namespaces, nothing aimed at another process); every process it starts inherits
both; nothing undoes them.

- ``no_new_privs``: no set-uid program or file capability can raise privileges again (the policy set it already).
- Landlock filesystem rules (ABI 3 or newer: earlier ABIs cannot stop ``truncate``): reading and executing only
  below the system directories and the Python installation; writing only in the session directory and the scratch
  directory; nothing else, ``/proc`` included, so no other process's entries (environment, memory, open files)
  can be read. Device nodes cannot be made anywhere.
- Landlock's process rules (every ABI): no ptrace of a process outside the sandbox.
- Landlock network rules (ABI 4): no TCP bind or connect (the policy refuses sockets anyway).
- Landlock scopes (ABI 6): signals and abstract UNIX sockets reach only processes of the same session. Below ABI 6,
  the policy refuses signals to every process (``kill(-1)``) and to the server's process and group and the template.

It uses a small binding from PyPI: ``landlock`` (its syscall wrappers and flags, with a larger ruleset attribute for
the network and scope fields it does not know).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from typing import Any

MIN_ABI = 3
_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
SIGNAL_SCOPE_ABI = 6
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing, disabled or refused."""
    return max(_landlock_version()[0], 0)


def _landlock_version() -> tuple[int, int]:
    """``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)``: (the ABI or -1, errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return int(version), ctypes.get_errno() if version < 0 else 0


def landlock_problem() -> str | None:
    """None when this process can use Landlock as a worker needs it (ABI 3 or newer), else why not: which layer
    refuses it (the kernel, or a container's seccomp profile) and what to do."""
    abi, error = _landlock_version()
    if abi >= MIN_ABI:
        return None
    if abi > 0:
        return (
            f"this kernel's Landlock ABI {abi} cannot stop truncate() (ABI {MIN_ABI} is Linux 6.2): upgrade the "
            "host's kernel"
        )
    return explain_missing_landlock(error, lsms=_lsms(), seccomp=_seccomp_mode(), release=os.uname().release)


def explain_missing_landlock(error: int, lsms: list[str] | None, seccomp: int | None, release: str) -> str:
    """Why ``landlock_create_ruleset`` failed with ``error``, from what else is known here: the kernel's active LSMs
    (``/sys/kernel/security/lsm``; None when it cannot be read, as in most containers), the process's seccomp mode
    (``Seccomp:`` of ``/proc/self/status``: 2 is a filter, as a container's profile) and the kernel's release."""
    kernel = f"Linux {release}"
    listed = f" (its LSMs: {','.join(lsms)})" if lsms is not None else ""
    filtered = seccomp == 2
    if error == errno.EOPNOTSUPP:
        return (
            f"this kernel ({kernel}) has Landlock built in but not enabled{listed}: add landlock to the lsm= boot "
            "parameter of the host's kernel"
        )
    if filtered and (error == errno.EPERM or (lsms is not None and "landlock" in lsms)):
        return (
            f"the seccomp profile this process runs under (a container's) refuses Landlock's system calls "
            f"(landlock_create_ruleset: {errno.errorcode.get(error, error)}), although the kernel ({kernel}) "
            + ("lists landlock among its LSMs" if lsms is not None and "landlock" in lsms else "has Landlock")
            + ": allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self in the container's "
            "seccomp profile (Docker and Podman: --security-opt seccomp=<a profile that allows them>)"
        )
    if lsms is not None and "landlock" not in lsms:
        return (
            f"this kernel ({kernel}) does not run Landlock{listed}: the tier needs a kernel built with "
            "CONFIG_SECURITY_LANDLOCK and landlock among its LSMs (Linux 6.2 or newer)"
        )
    if _older_than(release, (5, 13)):
        return f"this kernel ({kernel}) predates Landlock (Linux 5.13); the tier needs Linux 6.2 or newer"
    if filtered:
        return (
            f"Landlock's system calls are refused (landlock_create_ruleset: {errno.errorcode.get(error, error)}) "
            f"under the seccomp filter this process runs in (Seccomp: 2 in /proc/self/status, as a container's "
            f"profile), on a kernel ({kernel}) recent enough to have Landlock: most likely the container's seccomp "
            "profile does not allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self; allow "
            "them (Docker and Podman: --security-opt seccomp=<a profile that allows them>). If the profile allows "
            "them, the kernel was built without Landlock (the host's /sys/kernel/security/lsm does not list it)"
        )
    return (
        f"this kernel ({kernel}) offers no Landlock (landlock_create_ruleset: {errno.errorcode.get(error, error)}, "
        "and no seccomp filter is in the way): the tier needs Linux 6.2 or newer built with "
        "CONFIG_SECURITY_LANDLOCK, landlock among its LSMs"
    )


def _lsms() -> list[str] | None:
    try:
        with open("/sys/kernel/security/lsm") as fh:
            return [name for name in fh.read().strip().split(",") if name]
    except OSError:
        return None


def _seccomp_mode() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("Seccomp:")), None)
    except (OSError, ValueError, IndexError):
        return None


def _older_than(release: str, version: tuple[int, int]) -> bool:
    try:
        major, minor = (int(part) for part in release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < version


def confine(*, read_only: Iterable[str], read_write: Iterable[str], devices: Iterable[str]) -> dict[str, Any]:
    """Confine the calling process (and everything it starts) for good; returns what was applied.

    ``read_only``: directories to read and execute from. ``read_write``: the session's directories.
    ``devices``: character devices to read and write (``/dev/null``…).
    """
    problem = landlock_problem()
    if problem is not None:
        raise OSError(errno.ENOSYS, problem)
    abi = landlock_abi()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    # Orphans of the session stay the worker's children, so it can reap what the host ends.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _apply_landlock(abi, list(read_only), list(read_write), list(devices))
    return {"landlockAbi": abi, "signalScope": abi >= SIGNAL_SCOPE_ABI, "networkRules": abi >= 4}


def _apply_landlock(abi: int, read_only: list[str], read_write: list[str], devices: list[str]) -> None:
    from landlock import FSAccess
    from landlock.plumbing import PathBeneathAttr, RulesetAttr, get_add_rule, get_create_ruleset, get_restrict_self

    class RulesetAttrV6(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                    ("scoped", ctypes.c_uint64)]  # fmt: skip

    handled = FSAccess.all()
    attr = RulesetAttrV6(
        int(handled),
        (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= SIGNAL_SCOPE_ABI else 0,
    )
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if abi >= SIGNAL_SCOPE_ABI else 2 if abi >= 4 else 1)
    ruleset = get_create_ruleset()(ctypes.cast(ctypes.pointer(attr), ctypes.POINTER(RulesetAttr)), size, 0)
    file_rights = FSAccess.all_file()
    read = FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE
    write = handled & ~(FSAccess.MAKE_CHAR | FSAccess.MAKE_BLOCK)
    device = file_rights & (FSAccess.READ_FILE | FSAccess.WRITE_FILE | FSAccess.IOCTL_DEV)
    try:
        for paths, rights in ((read_only, read), (read_write, write), (devices, device)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    get_add_rule()(ruleset, 1, ctypes.byref(PathBeneathAttr(int(rights), fd)), 0)  # PATH_BENEATH
                finally:
                    os.close(fd)
        get_restrict_self()(ruleset, 0)
    finally:
        os.close(ruleset)
