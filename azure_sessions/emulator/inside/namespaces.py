"""Inside the bubblewrap template (stdlib only; loaded by the template): a forked worker's own namespaces.

Bubblewrap builds the sandbox the template runs in: the system directories and the Python environment read-only and
nothing else of the host, no network, the sessions' directories at ``SESSIONS_MOUNT`` and their scratch directories
at ``SCRATCH_MOUNT``. A worker forked from the template starts in its own PID namespace (as its PID 1; see
``forkserver.py``), then takes its own mount, network, IPC and UTS namespaces here: a fresh ``/proc`` showing only
its processes, its session's directory bound at ``/mnt/data``, its ``/tmp`` and ``/dev/shm`` bound from directories
of its scratch directory (on disk: nothing a session writes pins memory), every other session's hidden, a loopback of
its own, hostname ``session``. Then it gives up the capabilities that took (as root by changing to its own uid in
``limits.apply_limits``; in a user namespace by dropping them here), before any user code runs.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

SESSIONS_MOUNT = "/run/azure-sessions-emulator/sessions"
"""Where the template sees every session's directory (``<guid>``; the worker's ``/mnt/data``)."""
SCRATCH_MOUNT = "/run/azure-sessions-emulator/scratch"
"""Where the template sees every session's scratch directory (``<guid>/tmp`` and ``<guid>/shm``)."""
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWNET = 0x0002_0000, 0x0400_0000, 0x0800_0000, 0x4000_0000
CLONE_NEWPID = 0x2000_0000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_MS_RDONLY, _MS_REMOUNT = 1, 32
_PR_SET_NO_NEW_PRIVS = 38
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_LINUX_CAPABILITY_VERSION_3 = 0x2008_0522

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda v: None if v is None else v.encode()  # noqa: E731
    _check(_libc.mount(encode(source), target.encode(), encode(fstype), flags, encode(data)), f"mount {target}")


def enter(guid: str, tmp_dir: str, shm_dir: str, drop_capabilities: bool, tmp_binds: list[str] = ()) -> None:
    """Called as PID 1 of the worker's own PID namespace, with the template's capabilities still held.
    ``tmp_dir`` and ``shm_dir``: the session's directories (below ``SCRATCH_MOUNT``) that become its ``/tmp`` and
    ``/dev/shm``. ``tmp_binds``: directories of the Python environment below ``/tmp``, kept (read-only) in the new
    ``/tmp``."""
    unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the template's namespace
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _mount(f"{SESSIONS_MOUNT}/{guid}", "/mnt/data", None, _MS_BIND | _MS_REC)
    kept = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in tmp_binds]  # reachable once /tmp is new
    # (bind mounts keep their source's nosuid and nodev: bubblewrap's, at SCRATCH_MOUNT)
    _mount(tmp_dir, "/tmp", None, _MS_BIND | _MS_REC)
    _mount(shm_dir, "/dev/shm", None, _MS_BIND | _MS_REC)
    # Hidden under an empty mount rather than unmounted: in a user namespace, mounts inherited together are locked.
    for hidden in (SESSIONS_MOUNT, SCRATCH_MOUNT):
        _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY, "size=4k,mode=000")
    for path, fd in kept:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        os.close(fd)
    _loopback_up()
    socket.sethostname("session")
    if drop_capabilities:
        _drop_capabilities()


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def _drop_capabilities() -> None:
    """Every capability, for good (in a user namespace the uid does not change, so it would not drop them)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), (Data * 2)()), "capset")
