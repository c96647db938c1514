"""Inside the sandbox (standalone: stdlib, plus ``pyseccomp`` when applied): one seccomp policy for every tier.

What a session's processes may not ask of the kernel is written once, as data (:data:`COMMON`, plus a few groups
that depend on the tier), and applied by one function, :func:`install`. Every tier refuses:

- **namespaces and mounts**: ``unshare``, ``setns``, ``clone`` with a namespace flag (or ``CLONE_PARENT``, which
  would make a child of the worker's parent, outside the worker's tree), the whole mount family, ``chroot``, file handles;
- **other processes' memory**: ``ptrace``, ``process_vm_readv``/``writev``, ``kcmp``, ``pidfd_getfd``;
- **kernel interfaces a sandbox does not need** (each a source of kernel bugs): ``bpf``, ``perf_event_open``,
  ``userfaultfd``, key rings, ``personality``, ``fanotify``; module, kexec, reboot, swap, accounting, quota,
  ``syslog``, clock-setting, port I/O and host-name calls;
- ``io_uring_*`` and ``clone3`` with ENOSYS, so libraries fall back: io_uring would run calls behind seccomp's back,
  and ``clone3`` keeps its flags in memory the filter cannot read (glibc then uses ``clone``, whose flags it can);
- ``setsid``: every process of a session keeps the worker's session id, so the host finds them all;
- **every call that acts on, or reveals, another process by pid**: ``prlimit64``, the ``sched_*`` calls, ``getpgid``,
  ``getsid`` and ``get_robust_list`` with a pid other than 0 (the caller); ``setpriority``/``getpriority`` and
  ``ioprio_set``/``ioprio_get`` on anything but the caller itself (no process group, no user); ``migrate_pages``,
  ``move_pages`` on another pid, ``process_madvise``, ``process_mrelease``, ``pidfd_open``.

What differs per tier is data (:data:`TIERS`): the bubblewrap tier keeps sockets (its workers have a network
namespace holding only loopback) and SysV IPC (an IPC namespace of their own); the Landlock tier refuses ``socket()``
for every family; the Landlock and unisolated tiers, which share the host's IPC namespace, refuse SysV IPC and POSIX
message queues (a segment would outlive its session and be readable by the next); where no PID namespace or
Landlock signal scope keeps signals inside the session, signals to the pids given at apply time (the server's
process and group, the template) and ``kill(-1)`` are refused. Those pids are arguments of :func:`install`, compiled
into the filter and kept nowhere user code can read them.

With a ``notify_sock``, :func:`install` also sends the session's process-creating calls (``clone`` without the
refused flags, ``fork``, ``vfork``) to a supervisor on the host (``supervisor.py``), which counts the session's tasks
and answers "go on" below its cap and EAGAIN at it; where signals are guarded, the signalling calls (``kill``,
``tkill``, ``tgkill``, ``rt_sigqueueinfo``, ``rt_tgsigqueueinfo``) go there too, and reach only processes of the
session (the protected pids cover the server's process and group, not its threads, whose ids any process could
guess). The listener descriptor of the filter travels to the host over ``notify_sock`` (SCM_RIGHTS) and is closed
here before any user code runs, so nothing in the session can answer its own calls. A host without a supervisor,
or a kernel without user notification, gets the policy without it (and the protected pids' rules).

Where it goes in a worker's set-up (order matters): ``no_new_privs`` (done here too), the namespaces (bubblewrap),
the uid and rlimits, then this policy, then Landlock (``confine.py``), all before the first thread starts.

Pid arguments are compared to 0 on the whole 64-bit register (a value with any bit set is refused even where the
kernel would read only the low 32 bits as 0: refused, never let through); a pid given at apply time is matched on
the low 32 bits only, which is what the kernel reads, so high garbage bits cannot slip past it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

LISTENER_MESSAGE = b"seccomp-listener"
"""What :func:`install` sends over ``notify_sock`` with the listener descriptor."""
UNAVAILABLE_PREFIX = b"unavailable: "
"""What it sends instead (with the reason) when the kernel or libseccomp offers no user notification."""

_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_NEW_LISTENER, _SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = (
    1,
    1 << 3,
    1 << 5,
)
CLONE_PARENT = 0x0000_8000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (CLONE_NEWTIME only goes through unshare/clone3)
NAMESPACE_FLAGS = (0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000)
_CLONE_REFUSED_MASK = CLONE_PARENT | sum(NAMESPACE_FLAGS)
_IOPRIO_WHO_PROCESS = 1
_LOW32 = 0xFFFF_FFFF

# (NamedTuples, not dataclasses: the worker loads this file by path, without an entry in sys.modules.)
# A condition on one argument: (index, operator, a, b). "ne": arg != a (all 64 bits); "masked_eq": arg & a == b.
Condition = tuple[int, str, int, int]


class Refusal(NamedTuple):
    """One rule: ``syscall`` fails with ``errno`` when every condition of ``when`` holds (always when empty).
    Rules of one call are alternatives: any that matches refuses it."""

    group: str
    syscall: str
    errno: int
    when: tuple[Condition, ...] = ()


def _always(group: str, err: int, *names: str) -> list[Refusal]:
    return [Refusal(group, name, err) for name in names]


def _not_self(group: str, *names: str, arg: int = 0) -> list[Refusal]:
    """Refused unless argument ``arg`` is 0 (the caller)."""
    return [Refusal(group, name, errno.EPERM, ((arg, "ne", 0, 0),)) for name in names]


def _flag(flag: int) -> tuple[Condition, ...]:
    return ((0, "masked_eq", flag, flag),)


COMMON: tuple[Refusal, ...] = (
    *_always("namespaces", errno.EPERM, "unshare", "setns"),
    *(Refusal("namespaces", "clone", errno.EPERM, _flag(flag)) for flag in NAMESPACE_FLAGS),
    Refusal("namespaces", "clone", errno.EPERM, _flag(CLONE_PARENT)),
    *_always("mounts", errno.EPERM, "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr",
             "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "name_to_handle_at",
             "open_by_handle_at"),
    *_always("tracing", errno.EPERM, "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    *_always("kernel interfaces", errno.EPERM, "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
             "request_key", "personality", "fanotify_init", "lookup_dcookie", "vhangup"),
    *_always("administration", errno.EPERM, "kexec_load", "kexec_file_load", "init_module", "finit_module",
             "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
             "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm", "sethostname",
             "setdomainname"),
    *_always("unavailable", errno.ENOSYS, "io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"),
    *_always("session", errno.EPERM, "setsid"),
    # calls that act on (or reveal) another process by pid: only the caller itself (0) is accepted
    *_not_self("other processes", "prlimit64", "sched_setaffinity", "sched_getaffinity", "sched_setscheduler",
               "sched_getscheduler", "sched_setparam", "sched_getparam", "sched_setattr", "sched_getattr",
               "sched_rr_get_interval", "move_pages", "getpgid", "getsid", "get_robust_list"),
    *_not_self("other processes", "setpriority", "getpriority"),  # which != PRIO_PROCESS: a group or a user
    *_not_self("other processes", "setpriority", "getpriority", arg=1),
    *(Refusal("other processes", name, errno.EPERM, ((0, "ne", _IOPRIO_WHO_PROCESS, 0),))
      for name in ("ioprio_set", "ioprio_get")),
    *_not_self("other processes", "ioprio_set", "ioprio_get", arg=1),
    *_always("other processes", errno.EPERM, "migrate_pages", "process_madvise", "process_mrelease", "pidfd_open"),
)  # fmt: skip
"""What every tier refuses."""

SYSV_IPC: tuple[Refusal, ...] = tuple(
    _always("sysv ipc", errno.EPERM, "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semtimedop",
            "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open", "mq_unlink", "mq_timedsend",
            "mq_timedreceive", "mq_notify", "mq_getsetattr")
)  # fmt: skip
"""Refused where the tier has no IPC namespace of its own (SysV objects and POSIX message queues are host-wide)."""

SOCKETS: tuple[Refusal, ...] = (Refusal("sockets", "socket", errno.EACCES),)
"""Refused where the tier has no network namespace: every address family (``socketpair`` still works)."""

SIGNALLING = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
"""The calls that signal a pid, a thread or a process group (``pidfd_send_signal`` is refused where signals are
guarded: ``pidfd_open`` is refused everywhere anyway)."""
PROCESS_CREATING = ("clone", "fork", "vfork")


class TierRules(NamedTuple):
    """What a tier's sandbox already holds, hence what the filter must add. Each tier declares its own (the tier
    classes of ``tiers.py``); the worker receives them in its configuration."""

    tier: str  # the tier's name, for reports only
    sockets: bool  # its processes may open sockets (a network namespace of their own holds only loopback)
    sysv_ipc: bool  # an IPC namespace of its own: SysV IPC and message queues stay inside it
    guard_signals: bool  # no PID namespace and no Landlock signal scope: refuse signals to the protected pids

    def scoped(self, signal_scope: bool) -> TierRules:
        """These rules where Landlock keeps signals inside the session (ABI 6) when ``signal_scope``: then the
        filter need not guard them."""
        return self._replace(guard_signals=False) if signal_scope else self


def signal_refusals(protected_pids: Iterable[int]) -> list[Refusal]:
    """Signals to every process (``kill(-1)``), to each protected pid and to its process group; ``pidfd_send_signal``
    altogether. Matched on the low 32 bits, which is all the kernel reads of a pid."""
    refused = [Refusal("signals", "kill", errno.EPERM, ((0, "masked_eq", _LOW32, (-1) & _LOW32),)),
               Refusal("signals", "pidfd_send_signal", errno.EPERM)]  # fmt: skip
    for pid in sorted({int(p) for p in protected_pids if int(p) > 1}):
        refused += [Refusal("signals", name, errno.EPERM, ((0, "masked_eq", _LOW32, pid),)) for name in SIGNALLING]
        refused.append(Refusal("signals", "kill", errno.EPERM, ((0, "masked_eq", _LOW32, (-pid) & _LOW32),)))
    return refused


def refusals(rules: TierRules, protected_pids: Iterable[int] = ()) -> list[Refusal]:
    """Every rule of the policy for ``rules``' tier."""
    chosen = list(COMMON)
    if not rules.sysv_ipc:
        chosen += SYSV_IPC
    if not rules.sockets:
        chosen += SOCKETS
    if rules.guard_signals:
        chosen += signal_refusals(protected_pids)
    return chosen


def build(rules: TierRules, *, protected_pids: Iterable[int] = (), notify: bool = False) -> Any:
    """The policy as a ``pyseccomp.SyscallFilter`` (not loaded). ``notify``: process-creating calls, and the
    signalling calls where ``rules.guard_signals``, go to a supervisor (user notification) instead of straight
    through or to the protected pids' rules."""
    import pyseccomp as sc

    ops = {"ne": sc.NE, "masked_eq": sc.MASKED_EQ}
    flt = sc.SyscallFilter(sc.ALLOW)
    # a binary tree of the calls rather than a list (every system call of the session pays for the filter);
    # libseccomp before 2.5 builds the list
    with contextlib.suppress(OSError):
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)

    def add(action: int, name: str, conditions: tuple[Condition, ...] = ()) -> None:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:  # a call this architecture does not have
            return
        flt.add_rule(action, name, *(sc.Arg(index, ops[op], a, b) for index, op, a, b in conditions))

    supervised_signals = notify and rules.guard_signals
    for rule in refusals(rules, protected_pids):
        if not (supervised_signals and rule.syscall in SIGNALLING):  # the supervisor decides all of them
            add(sc.ERRNO(rule.errno), rule.syscall, rule.when)
    if notify:
        add(sc.NOTIFY, "clone", ((0, "masked_eq", _CLONE_REFUSED_MASK, 0),))
        add(sc.NOTIFY, "fork")
        add(sc.NOTIFY, "vfork")
    if supervised_signals:
        for name in SIGNALLING:
            add(sc.NOTIFY, name)
    return flt


def install(
    rules: TierRules, *, protected_pids: Iterable[int] = (), notify_sock: socket.socket | int | None = None
) -> dict[str, Any]:
    """Apply the policy to the calling process for good (every process it starts inherits it); returns what was
    applied. Call it while the process has a single thread: a filter covers the thread that loads it and the
    threads started after.

    ``protected_pids``: kept out of reach of signals where ``rules.guard_signals``; pass them from a variable that
    is then dropped, never from anything the session keeps. ``notify_sock``: a socket to the host's supervisor; the
    filter's listener descriptor is sent over it (or why there is none) and both are closed here.
    """
    protected = list(protected_pids)
    _require_single_thread()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    sock = socket.socket(fileno=notify_sock) if isinstance(notify_sock, int) else notify_sock
    listener, why = None, ""
    try:
        if sock is not None:
            try:
                listener = _load_with_listener(build(rules, protected_pids=protected, notify=True))
            except OSError as exc:  # no user notification here (an old kernel or libseccomp, a listener above)
                why = f"user notification is unavailable: {exc.strerror or exc}"
        if listener is None:
            build(rules, protected_pids=protected).load()
        if sock is not None:
            _hand_over_listener(sock, listener, why)
    finally:
        if sock is not None:
            sock.close()
    process_cap = listener is not None
    return {"policy": rules.tier, "rules": len(refusals(rules, protected)), "processCap": process_cap,
            "signalsSupervised": process_cap and rules.guard_signals}  # fmt: skip


def _load_with_listener(flt: Any) -> int:
    """Load ``flt`` with a listener of its own and return the listener's descriptor. The filter is loaded here rather
    than by libseccomp, which keeps one listener descriptor per process and hands the same number out again."""
    import pyseccomp as sc

    release = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
    if release < (5, 5):
        raise OSError(errno.ENOSYS, "Linux 5.5 or newer is needed to let a supervised call go on")
    program_fd = os.memfd_create("session-policy", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(program_fd), "wb") as out:
            flt.export_bpf(out)
        program = os.pread(program_fd, os.fstat(program_fd).st_size, 0)
    finally:
        os.close(program_fd)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(instructions))
    libc = ctypes.CDLL(None, use_errno=True)
    number = sc.resolve_syscall(sc.Arch.NATIVE, "seccomp")
    # Once the supervisor has received a call, its caller waits for the answer killably (Linux 5.19): a signal
    # would otherwise make the call fail with EINTR, which fork never does without a filter.
    for flags in (_SECCOMP_FILTER_FLAG_NEW_LISTENER | _SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                  _SECCOMP_FILTER_FLAG_NEW_LISTENER):  # fmt: skip
        listener = libc.syscall(ctypes.c_long(number), ctypes.c_long(_SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags),
                                ctypes.byref(fprog))  # fmt: skip
        code = ctypes.get_errno()
        if listener >= 0 or code != errno.EINVAL:
            break
    if listener < 0:
        raise OSError(code, os.strerror(code))
    return listener


def _hand_over_listener(sock: socket.socket, listener: int | None, why: str) -> None:
    """Send the filter's listener to the host and close it here: before the first clone, which would otherwise wait
    for an answer nobody gives."""
    if listener is None:
        sock.send(UNAVAILABLE_PREFIX + why.encode("utf-8", "replace"))
        return
    try:
        socket.send_fds(sock, [LISTENER_MESSAGE], [listener])
    finally:
        os.close(listener)


def _require_single_thread() -> None:
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return  # no /proc to ask: the caller's word
    if threads > 1:
        raise RuntimeError(f"the seccomp policy must be installed before any thread starts ({threads} running)")
