"""The one seccomp policy of every tier (``policy.py``), proved on real processes: a session process with the policy
applied (as a worker applies it) makes each call, in a child of its own, aimed at a sacrificial process of the same
uid in a session of its own (the "server"), and the errno is checked. Runs as root and as uid 1000 without user
namespaces (the Space stage) alike: every call is answered by the filter before the kernel's own checks.
"""

from __future__ import annotations

import os
from functools import cache

import pytest

from azure_sessions.emulator.inside import policy
from azure_sessions.emulator.supervisor import ProcessSupervisor
from azure_sessions.emulator.tiers import LandlockTier
from tests.support.session_procs import WORKLOAD, WORKLOAD_PARTS, probe_code, run_session, sacrificial_process

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux")

TIERS = ("bubblewrap", "landlock", "unisolated")
REFUSED_IN_EVERY_TIER = {
    "namespaces": ("EPERM", ["unshare_user", "unshare_net", "setns", "clone_newuser", "clone_newpid",
                             "clone_newnet", "clone_parent"]),
    "mounts": ("EPERM", ["mount", "umount2", "pivot_root", "chroot", "open_tree", "fsopen", "move_mount",
                         "name_to_handle_at", "open_by_handle_at"]),
    "tracing": ("EPERM", ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"]),
    "kernel interfaces": ("EPERM", ["bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
                                    "personality", "fanotify_init"]),
    "administration": ("EPERM", ["kexec_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
                                 "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime",
                                 "clock_adjtime", "adjtimex", "iopl", "ioperm", "sethostname", "setdomainname"]),
    "unavailable": ("ENOSYS", ["io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"]),
    "session": ("EPERM", ["setsid"]),
    "other processes": ("EPERM", ["prlimit_set", "prlimit_get", "prlimit_high_bits", "setpriority_pid",
                                  "setpriority_group", "setpriority_user", "getpriority_pid", "getpriority_group",
                                  "getpriority_user", "sched_setaffinity", "sched_getaffinity", "sched_setscheduler",
                                  "sched_getscheduler", "sched_setparam", "sched_getparam", "sched_setattr",
                                  "sched_getattr", "sched_rr_get_interval", "ioprio_set", "ioprio_get",
                                  "ioprio_get_group", "ioprio_get_user", "migrate_pages", "migrate_pages_self",
                                  "move_pages", "process_madvise", "process_mrelease", "pidfd_open", "getpgid",
                                  "getsid", "get_robust_list"]),
}  # fmt: skip
SYSV_IPC = ["shmget", "semget", "msgget", "shmat", "shmdt", "shmctl", "semop", "semtimedop", "semctl", "msgsnd",
            "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
            "mq_getsetattr"]  # fmt: skip
SOCKETS = ["socket_inet", "socket_inet6", "socket_unix", "socket_netlink"]
SIGNALS = ["kill_target", "kill_group", "kill_everyone", "kill_target_high_bits", "kill_group_high_bits",
           "tkill_target", "tgkill_target", "sigqueue_target", "tgsigqueue_target", "pidfd_send_signal"]  # fmt: skip
OWN_SIGNALS = ["kill_self", "kill_own_group", "kill_own_child", "kill_own_child_group"]
ON_ITSELF = ["prlimit_self", "nice_self", "getpriority_self", "sched_getaffinity_self", "sched_setaffinity_self",
             "sched_getscheduler_self", "sched_getparam_self", "ioprio_get_self", "ioprio_set_self",
             "move_pages_self", "getpgid_self", "getsid_self", "get_robust_list_self", "kill_self",
             "kill_own_group", "socketpair", "clone_plain"]  # fmt: skip


@pytest.fixture(scope="module")
def server():
    """The sacrificial 'server': every probe aims at it (signal 0, its own limits, its scheduling)."""
    proc = sacrificial_process()
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="module")
def probed(server):
    """Every probe's outcome in a session process under ``tier``'s policy, made once per tier."""

    supervisor = ProcessSupervisor()

    @cache
    def outcomes(tier: str, signal_scope: bool = False, supervised: bool = False) -> dict[str, str]:
        context = {"target": server.pid, "thread": server.thread, "uid": os.getuid()}
        return run_session(probe_code(None, context), tier=tier, signal_scope=signal_scope, protected=[server.pid],
                           supervisor=supervisor if supervised else None)  # fmt: skip

    yield outcomes
    supervisor.close()


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("group", REFUSED_IN_EVERY_TIER)
def test_every_tier_refuses(probed, group: str, tier: str) -> None:
    expected, names = REFUSED_IN_EVERY_TIER[group]
    outcomes = probed(tier)
    assert {name: outcomes[name] for name in names} == dict.fromkeys(names, expected)


@pytest.mark.parametrize("tier", ["landlock", "unisolated"])
def test_sysv_ipc_and_message_queues_are_refused_without_an_ipc_namespace(probed, tier: str) -> None:
    outcomes = probed(tier)
    assert {name: outcomes[name] for name in SYSV_IPC} == dict.fromkeys(SYSV_IPC, "EPERM")


def test_the_bubblewrap_tier_keeps_sysv_ipc_inside_its_own_ipc_namespace(probed) -> None:
    outcomes = probed("bubblewrap")
    assert [outcomes[name] for name in ("shmget", "semget", "msgget")] == ["ok"] * 3
    assert "EPERM" not in {outcomes[name] for name in SYSV_IPC}


def test_sockets_are_refused_for_every_family_in_the_landlock_tier_only(probed) -> None:
    assert {name: probed("landlock")[name] for name in SOCKETS} == dict.fromkeys(SOCKETS, "EACCES")
    for tier in ("bubblewrap", "unisolated"):  # bubblewrap: a network namespace holding only loopback
        assert {name: probed(tier)[name] for name in SOCKETS} == dict.fromkeys(SOCKETS, "ok"), tier


@pytest.mark.parametrize("tier", ["landlock", "unisolated"])
def test_signals_to_the_protected_pids_are_refused_without_a_signal_scope(probed, tier: str) -> None:
    """Also with garbage in the high 32 bits of the pid, which the kernel ignores."""
    outcomes = probed(tier)
    assert {name: outcomes[name] for name in SIGNALS} == dict.fromkeys(SIGNALS, "EPERM")


def test_with_landlocks_signal_scope_the_filter_leaves_signals_to_landlock(probed) -> None:
    outcomes = probed("landlock", signal_scope=True)
    assert outcomes["kill_target"] == outcomes["kill_group"] == "ok"  # no Landlock here: only the filter is tried
    assert outcomes["setsid"] == "EPERM"


@pytest.mark.parametrize("tier", ["landlock", "unisolated"])
def test_with_a_supervisor_signals_reach_only_the_sessions_own_processes(probed, tier: str) -> None:
    """Not the server's threads either (their ids are not among the protected pids); outside the session every
    target looks absent (ESRCH), so none can be found by signalling it."""
    outcomes = probed(tier, supervised=True)
    outside = [*SIGNALS, "kill_server_thread", "tkill_server_thread"]
    expected = dict.fromkeys(outside, "ESRCH") | {"kill_everyone": "EPERM", "pidfd_send_signal": "EPERM"}
    assert {name: outcomes[name] for name in outside} == expected
    assert {name: outcomes[name] for name in OWN_SIGNALS} == dict.fromkeys(OWN_SIGNALS, "ok")


@pytest.mark.parametrize("tier", TIERS)
def test_a_session_still_acts_on_itself(probed, tier: str) -> None:
    outcomes = probed(tier)
    assert {name: outcomes[name] for name in ON_ITSELF} == dict.fromkeys(ON_ITSELF, "ok")
    assert {name: outcomes[name] for name in OWN_SIGNALS} == dict.fromkeys(OWN_SIGNALS, "ok")


@pytest.mark.parametrize("tier", TIERS)
def test_python_and_its_libraries_work_under_the_policy(tier: str) -> None:
    """numpy, pandas, matplotlib, subprocess, threads, asyncio, os.nice, cpu counts, setrlimit on itself,
    multiprocessing and IPython."""
    assert run_session(WORKLOAD, tier=tier) == WORKLOAD_PARTS


def test_every_call_the_policy_names_exists_on_this_architecture() -> None:
    """A misspelt name would be skipped silently (calls another architecture lacks are skipped on purpose)."""
    sc = pytest.importorskip("pyseccomp")
    elsewhere = {"umount", "ipc"}  # x86-64 has umount2 and the separate SysV calls
    names = {r.syscall for r in [*policy.COMMON, *policy.SYSV_IPC, *policy.SOCKETS, *policy.signal_refusals([2])]}
    missing = {n for n in names if sc.resolve_syscall(sc.Arch.NATIVE, n) < 0} - elsewhere
    assert not missing


def test_the_policy_must_be_installed_before_a_thread_starts() -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "try:\n"
        "    install(LANDLOCK)\n"
        "    report('installed')\n"
        "except RuntimeError as exc:\n"
        "    report(str(exc))\n"
    )
    setup = f"import importlib.util\nl = importlib.util.spec_from_file_location('p', {policy.__file__!r})\n"
    setup += "p = importlib.util.module_from_spec(l); l.loader.exec_module(p); install = p.install\n"
    setup += f"LANDLOCK = p.TierRules(*{list(LandlockTier.seccomp)!r})\n"
    assert "before any thread starts" in run_session(setup + code, tier=None)
