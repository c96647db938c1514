"""Raw system calls a session's code could make, each harmless to the machine whatever the answer (invalid
arguments, signal 0, a sacrificial target process), for the seccomp policy's tests. Standalone: loaded by path into
a session process (``session_process.py``).

:func:`run` makes each call in a child process of its own (a call that succeeds, such as ``unshare``, must not
change the next) and answers ``"ok"`` or the errno's name per probe. ``context``: ``target`` (a pid of the same uid
in a session and process group of its own: the "server"), ``thread`` (the id of one of its threads other than
the first) and ``uid``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os

_libc = ctypes.CDLL(None, use_errno=True)
SIGCHLD = 17
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_PARENT = 0x1000_0000, 0x2000_0000, 0x4000_0000, 0x8000
IOPRIO_BE_4 = (2 << 13) | 4
HIGH_BITS = 0xDEAD << 32


def _number(name: str) -> int:
    import pyseccomp as sc

    number = sc.resolve_syscall(sc.Arch.NATIVE, name)
    if number < 0:
        raise LookupError(name)
    return number


def _arg(value: object) -> object:
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    return value  # a ctypes buffer or byref()


def sys(name: str, *args: object) -> int:
    """The raw call; raises OSError with the errno it failed with."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(_number(name)), *(_arg(a) for a in args))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _fd(result: int) -> int:
    os.close(result)
    return result


def _clone(flags: int) -> int:
    child = sys("clone", flags | SIGCHLD, 0, None, None, 0)
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def _buffer(size: int = 256) -> ctypes.Array:
    return ctypes.create_string_buffer(size)


def _siginfo() -> ctypes.Array:
    info = _buffer(128)
    ctypes.memmove(info, (0).to_bytes(4, "little") * 2 + (-1).to_bytes(4, "little", signed=True), 12)  # SI_QUEUE
    return info


def _sched_attr() -> ctypes.Array:
    attr = _buffer(48)
    ctypes.memmove(attr, (48).to_bytes(4, "little"), 4)  # size; policy SCHED_OTHER, nice 0
    return attr


def _affinity() -> ctypes.Array:
    mask = _buffer(128)
    for cpu in os.sched_getaffinity(0):
        mask[cpu // 8] = bytes([mask[cpu // 8][0] | (1 << (cpu % 8))])
    return mask


def _sysv(getter: str, remover: str, *args: int) -> int:
    ident = sys(getter, 0, *args)  # IPC_PRIVATE
    if remover == "shmctl":
        sys("shmctl", ident, 0, None)  # IPC_RMID
    elif remover == "semctl":
        sys("semctl", ident, 0, 0, None)
    else:
        sys("msgctl", ident, 0, None)
    return ident


def _socket(family: int, kind: int) -> int:
    return _fd(sys("socket", family, kind, 0))


def _socketpair() -> int:
    fds = (ctypes.c_int * 2)()
    result = sys("socketpair", 1, 1, 0, fds)
    for fd in fds:
        os.close(fd)
    return result


def _signal_own_child(group: bool) -> int:
    """Signal a child of ours (or its own process group), then collect it."""
    import signal
    import time

    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        time.sleep(60)
        os._exit(0)
    with contextlib.suppress(OSError):  # it made its group first
        os.setpgid(child, child)
    result = sys("kill", -child if group else child, signal.SIGKILL)
    os.waitpid(child, 0)
    return result


def probes(ctx: dict) -> dict:
    """Probe name -> a call (its value, or OSError)."""
    t, me, uid = ctx["target"], os.getpid(), ctx["uid"]
    thread = ctx.get("thread", t)
    nowhere = b"/nonexistent-policy-probe"
    return {
        # namespaces and the process tree
        "unshare_user": lambda: sys("unshare", CLONE_NEWUSER),
        "unshare_net": lambda: sys("unshare", CLONE_NEWNET),
        "setns": lambda: sys("setns", -1, 0),
        "clone_newuser": lambda: _clone(CLONE_NEWUSER),
        "clone_newpid": lambda: _clone(CLONE_NEWPID),
        "clone_newnet": lambda: _clone(CLONE_NEWNET),
        "clone_parent": lambda: _clone(CLONE_PARENT),
        # mounts
        "mount": lambda: sys("mount", b"none", nowhere, b"tmpfs", 0, None),
        "umount2": lambda: sys("umount2", nowhere, 0),
        "pivot_root": lambda: sys("pivot_root", nowhere, nowhere),
        "chroot": lambda: sys("chroot", nowhere),
        "open_tree": lambda: _fd(sys("open_tree", -100, nowhere, 0)),
        "fsopen": lambda: _fd(sys("fsopen", b"no-such-filesystem", 0)),
        "move_mount": lambda: sys("move_mount", -1, b"", -1, b"", 0),
        "name_to_handle_at": lambda: sys("name_to_handle_at", -100, nowhere, None, None, 0),
        "open_by_handle_at": lambda: sys("open_by_handle_at", -1, None, 0),
        # other processes' memory
        "ptrace": lambda: sys("ptrace", 2, t, 0, 0),  # PTRACE_PEEKDATA: the target is not traced
        "process_vm_readv": lambda: sys("process_vm_readv", t, None, 0, None, 0, 0),
        "process_vm_writev": lambda: sys("process_vm_writev", t, None, 0, None, 0, 0),
        "kcmp": lambda: sys("kcmp", me, t, 0, 0, 0),
        "pidfd_getfd": lambda: sys("pidfd_getfd", -1, 0, 0),
        # kernel interfaces
        "bpf": lambda: sys("bpf", 0x7FFF, None, 0),
        "perf_event_open": lambda: sys("perf_event_open", None, 0, -1, -1, 0),
        "userfaultfd": lambda: _fd(sys("userfaultfd", 1)),  # UFFD_USER_MODE_ONLY: allowed unprivileged
        "keyctl": lambda: sys("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring, not created
        "add_key": lambda: sys("add_key", b"user", b"probe", None, 0, 0),
        "request_key": lambda: sys("request_key", b"user", b"no-such-key", None, 0),
        "personality": lambda: sys("personality", 0xFFFF_FFFF),  # a query
        "fanotify_init": lambda: _fd(sys("fanotify_init", 0, 0)),
        # administration
        "kexec_load": lambda: sys("kexec_load", 0, 0, None, 0xDEAD_0000),
        "init_module": lambda: sys("init_module", None, 0, b""),
        "finit_module": lambda: sys("finit_module", -1, b"", 0),
        "delete_module": lambda: sys("delete_module", b"no_such_module_probe", 0o4000),
        "reboot": lambda: sys("reboot", 0, 0, 0, None),  # bad magic numbers
        "swapon": lambda: sys("swapon", nowhere, 0),
        "swapoff": lambda: sys("swapoff", nowhere),
        "acct": lambda: sys("acct", nowhere),
        "quotactl": lambda: sys("quotactl", 0, None, 0, None),
        "syslog": lambda: sys("syslog", 10, None, 0),  # the size of the kernel's log buffer
        "settimeofday": lambda: sys("settimeofday", None, None),
        "clock_settime": lambda: sys("clock_settime", 0, None),
        "clock_adjtime": lambda: sys("clock_adjtime", 0, None),
        "adjtimex": lambda: sys("adjtimex", None),
        "iopl": lambda: sys("iopl", 0),
        "ioperm": lambda: sys("ioperm", 0, 0, 0),
        "sethostname": lambda: sys("sethostname", b"x", 1000),  # too long
        "setdomainname": lambda: sys("setdomainname", b"x", 1000),
        # refused with ENOSYS so that libraries fall back
        "io_uring_setup": lambda: _fd(sys("io_uring_setup", 1, _buffer(120))),
        "io_uring_enter": lambda: sys("io_uring_enter", -1, 0, 0, 0, None, 0),
        "io_uring_register": lambda: sys("io_uring_register", -1, 0, None, 0),
        "clone3": lambda: sys("clone3", None, 0),
        # the session id
        "setsid": lambda: sys("setsid"),
        # other processes, by pid
        "prlimit_set": lambda: sys("prlimit64", t, 0, ctypes.byref((ctypes.c_uint64 * 2)(3600, 3600)), None),
        "prlimit_get": lambda: sys("prlimit64", t, 7, None, _buffer(16)),
        "prlimit_high_bits": lambda: sys("prlimit64", HIGH_BITS | t, 7, None, _buffer(16)),
        "setpriority_pid": lambda: sys("setpriority", 0, t, 5),
        "setpriority_group": lambda: sys("setpriority", 1, t, 5),
        "setpriority_user": lambda: sys("setpriority", 2, 3_999_999, 19),  # a uid without processes
        "getpriority_pid": lambda: sys("getpriority", 0, t),
        "getpriority_group": lambda: sys("getpriority", 1, t),
        "getpriority_user": lambda: sys("getpriority", 2, uid),
        "sched_setaffinity": lambda: sys("sched_setaffinity", t, 128, _affinity()),
        "sched_getaffinity": lambda: sys("sched_getaffinity", t, 128, _buffer(128)),
        "sched_setscheduler": lambda: sys("sched_setscheduler", t, 0, _buffer(8)),
        "sched_getscheduler": lambda: sys("sched_getscheduler", t),
        "sched_setparam": lambda: sys("sched_setparam", t, _buffer(8)),
        "sched_getparam": lambda: sys("sched_getparam", t, _buffer(8)),
        "sched_setattr": lambda: sys("sched_setattr", t, _sched_attr(), 0),
        "sched_getattr": lambda: sys("sched_getattr", t, _buffer(64), 48, 0),
        "sched_rr_get_interval": lambda: sys("sched_rr_get_interval", t, _buffer(16)),
        "ioprio_set": lambda: sys("ioprio_set", 1, t, IOPRIO_BE_4),
        "ioprio_get": lambda: sys("ioprio_get", 1, t),
        "ioprio_get_group": lambda: sys("ioprio_get", 2, t),
        "ioprio_get_user": lambda: sys("ioprio_get", 3, uid),
        "migrate_pages": lambda: sys("migrate_pages", t, 0, None, None),
        "migrate_pages_self": lambda: sys("migrate_pages", 0, 0, None, None),
        "move_pages": lambda: sys("move_pages", t, 0, None, None, None, 0),
        "process_madvise": lambda: sys("process_madvise", -1, None, 0, 0, 0),
        "process_mrelease": lambda: sys("process_mrelease", -1, 0),
        "pidfd_open": lambda: _fd(sys("pidfd_open", t, 0)),
        "getpgid": lambda: sys("getpgid", t),
        "getsid": lambda: sys("getsid", t),
        "get_robust_list": lambda: sys("get_robust_list", t, _buffer(8), _buffer(8)),
        # SysV IPC and POSIX message queues
        "shmget": lambda: _sysv("shmget", "shmctl", 4096, 0o1600),
        "semget": lambda: _sysv("semget", "semctl", 1, 0o1600),
        "msgget": lambda: _sysv("msgget", "msgctl", 0o1600),
        "shmat": lambda: sys("shmat", -1, None, 0),
        "shmdt": lambda: sys("shmdt", None),
        "shmctl": lambda: sys("shmctl", -1, 2, _buffer()),  # IPC_STAT
        "semop": lambda: sys("semop", -1, None, 0),
        "semtimedop": lambda: sys("semtimedop", -1, None, 0, None),
        "semctl": lambda: sys("semctl", -1, 0, 2, None),
        "msgsnd": lambda: sys("msgsnd", -1, None, 0, 0),
        "msgrcv": lambda: sys("msgrcv", -1, None, 0, 0, 0o4000),
        "msgctl": lambda: sys("msgctl", -1, 2, _buffer()),
        "mq_open": lambda: sys("mq_open", b"no-such-queue", 0, 0, None),
        "mq_unlink": lambda: sys("mq_unlink", b"no-such-queue"),
        "mq_timedsend": lambda: sys("mq_timedsend", -1, None, 0, 0, None),
        "mq_timedreceive": lambda: sys("mq_timedreceive", -1, None, 0, None, None),
        "mq_notify": lambda: sys("mq_notify", -1, None),
        "mq_getsetattr": lambda: sys("mq_getsetattr", -1, None, None),
        # sockets
        "socket_inet": lambda: _socket(2, 1),
        "socket_inet6": lambda: _socket(10, 2),
        "socket_unix": lambda: _socket(1, 1),
        "socket_netlink": lambda: _socket(16, 2),
        # signals (number 0: only whether it may be sent)
        "kill_target": lambda: sys("kill", t, 0),
        "kill_group": lambda: sys("kill", -t, 0),
        "kill_everyone": lambda: sys("kill", -1, 0),
        "kill_target_high_bits": lambda: sys("kill", HIGH_BITS | t, 0),
        "kill_group_high_bits": lambda: sys("kill", HIGH_BITS | ((-t) & 0xFFFF_FFFF), 0),
        "tkill_target": lambda: sys("tkill", t, 0),
        "tgkill_target": lambda: sys("tgkill", t, t, 0),
        "sigqueue_target": lambda: sys("rt_sigqueueinfo", t, 0, _siginfo()),
        "tgsigqueue_target": lambda: sys("rt_tgsigqueueinfo", t, t, 0, _siginfo()),
        "pidfd_send_signal": lambda: sys("pidfd_send_signal", -1, 0, None, 0),
        "kill_server_thread": lambda: sys("kill", thread, 0),
        "tkill_server_thread": lambda: sys("tkill", thread, 0),
        # what a session does to itself, which must keep working
        "prlimit_self": lambda: sys("prlimit64", 0, 7, None, _buffer(16)),
        "nice_self": lambda: sys("setpriority", 0, 0, os.getpriority(os.PRIO_PROCESS, 0)),
        "getpriority_self": lambda: sys("getpriority", 0, 0),
        "sched_getaffinity_self": lambda: sys("sched_getaffinity", 0, 128, _buffer(128)),
        "sched_setaffinity_self": lambda: sys("sched_setaffinity", 0, 128, _affinity()),
        "sched_getscheduler_self": lambda: sys("sched_getscheduler", 0),
        "sched_getparam_self": lambda: sys("sched_getparam", 0, _buffer(8)),
        "ioprio_get_self": lambda: sys("ioprio_get", 1, 0),
        "ioprio_set_self": lambda: sys("ioprio_set", 1, 0, IOPRIO_BE_4),
        "move_pages_self": lambda: sys("move_pages", 0, 0, None, None, None, 0),
        "getpgid_self": lambda: sys("getpgid", 0),
        "getsid_self": lambda: sys("getsid", 0),
        "get_robust_list_self": lambda: sys("get_robust_list", 0, _buffer(8), _buffer(8)),
        "kill_self": lambda: sys("kill", me, 0),
        "kill_own_group": lambda: sys("kill", 0, 0),
        "kill_own_child": lambda: _signal_own_child(group=False),
        "kill_own_child_group": lambda: _signal_own_child(group=True),
        "socketpair": lambda: _socketpair(),
        "clone_plain": lambda: _clone(0),
    }


def run(names: list[str] | None, context: dict) -> dict[str, str]:
    """Each named probe in a child process of its own: ``"ok"``, the errno's name, or ``"no such call"``."""
    table = probes(context)
    results = {}
    for name in names or list(table):
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            try:
                table[name]()
                outcome = "ok"
            except OSError as exc:
                outcome = errno.errorcode.get(exc.errno, str(exc.errno))
            except LookupError:
                outcome = "no such call"
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        os.waitpid(child, 0)
        results[name] = json.loads(data) if data else "died"
    return results
