"""The per-session cap on tasks (``supervisor.py``), on real session processes: each installs the seccomp policy with
user notification, as a worker does, and the host's supervisor answers its process-creating calls. Every session
runs as this test's uid, as all Landlock workers share the server's uid on a Space.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from azure_sessions.emulator.census import Census
from azure_sessions.emulator.inside import strays
from azure_sessions.emulator.supervisor import BURST, RATE, ProcessSupervisor, session_tasks
from azure_sessions.emulator.tiers import LandlockTier
from tests.support.harness import wait_until
from tests.support.session_procs import (
    POLICY,
    WORKLOAD,
    WORKLOAD_PARTS,
    end_session,
    read_line,
    run_session,
    start_session,
    waiting_for_an_answer,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux")

CAP = 40
FORK_BOMB = """
import errno, os, time
made, refused = 0, None
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        refused = errno.errorcode[exc.errno]
        break
    if pid == 0:  # every child forks too, for as long as it can, then holds on
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(600)
            except OSError:
                time.sleep(600)
    made += 1
report({"made": made, "refused": refused})
time.sleep(600)
"""
HOLD_SLEEPERS = """
import errno, os, time
made, refused = 0, None
for _ in range(args["count"]):
    try:
        pid = os.fork()
    except OSError as exc:
        refused = errno.errorcode[exc.errno]
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    made += 1
report({"made": made, "refused": refused})
time.sleep(600)
"""
FORK_SOME = """
import os
children = []
for _ in range(args.get("count", 5)):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
report("forked")
"""


@pytest.fixture
def supervisor():
    sup = ProcessSupervisor()
    yield sup
    sup.close()


@pytest.fixture
def sessions():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        end_session(proc)


def tasks_of(proc: subprocess.Popen) -> int:
    return session_tasks({proc.pid}).get(proc.pid, 0)


def test_a_fork_bomb_stops_at_its_cap_while_another_session_and_a_new_worker_still_fork(supervisor, sessions):
    bomb = start_session(FORK_BOMB, supervisor=supervisor, cap=CAP)
    sessions.append(bomb)
    assert read_line(bomb)["refused"] == "EAGAIN"
    assert tasks_of(bomb) <= CAP
    # the bomb's processes keep trying; every other session of the same uid still forks
    other = start_session(FORK_SOME, supervisor=supervisor, cap=CAP)
    sessions.append(other)
    assert read_line(other) == "forked"
    assert subprocess.run(["true"]).returncode == 0  # the template (the host here) is under no session's filter
    newcomer = start_session(FORK_SOME, supervisor=supervisor, cap=CAP, args={"count": 10})
    sessions.append(newcomer)
    assert read_line(newcomer) == "forked"
    assert tasks_of(bomb) <= CAP
    assert supervisor.status(bomb.pid).refused > 0


def test_one_session_cannot_hold_300_sleeping_processes(supervisor, sessions):
    holder = start_session(HOLD_SLEEPERS, supervisor=supervisor, cap=64, args={"count": 300})
    sessions.append(holder)
    outcome = read_line(holder)
    assert outcome == {"made": 63, "refused": "EAGAIN"}  # 63 children and the session's first process
    assert tasks_of(holder) == 64


def test_threads_count_against_the_cap(supervisor, sessions):
    code = (
        "import threading, time, os\n"
        "threads = 0\n"
        "while True:\n"
        "    try:\n"
        "        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "    except RuntimeError:\n"
        "        break\n"
        "    threads += 1\n"
        "try:\n"
        "    os.fork()\n"
        "    forked = True\n"
        "except BlockingIOError:\n"
        "    forked = False\n"
        "report({'threads': threads, 'forked': forked})\n"
        "time.sleep(600)\n"
    )
    proc = start_session(code, supervisor=supervisor, cap=CAP)
    sessions.append(proc)
    assert read_line(proc) == {"threads": CAP - 1, "forked": False}
    assert tasks_of(proc) == CAP


def test_tasks_that_end_give_their_place_back(supervisor, sessions):
    """300 short-lived processes one after another in a session capped at 16: each ends before the next."""
    assert run_session(FORK_SOME, supervisor=supervisor, cap=16, args={"count": 1}) == "forked"
    code = "import subprocess\nfor _ in range(300):\n    subprocess.run(['true'], check=True)\nreport('done')\n"
    assert run_session(code, supervisor=supervisor, cap=16) == "done"


def test_python_and_its_libraries_work_under_the_cap(supervisor):
    assert run_session(WORKLOAD, supervisor=supervisor, cap=64) == WORKLOAD_PARTS


WAIT_AND_FORK = """
import os, threading
report("ready")
input_line = os.read(0, 1) if args.get("wait") else b""
try:
    pid = os.fork()
except OSError as exc:
    report(exc.strerror)
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    report("forked")
"""


def test_a_call_waiting_on_a_supervisor_that_goes_fails_with_enosys(sessions):
    """The host holds the listener but never answers (a hung server); when it goes, the waiting fork fails."""
    proc = start_session(WAIT_AND_FORK, notify=True)
    sessions.append(proc)
    message, fds, _, _ = socket.recv_fds(proc.channel, 1024, 1)
    assert message == b"seccomp-listener" and len(fds) == 1
    assert read_line(proc) == "ready"
    wait_until(lambda: waiting_for_an_answer(proc.pid), what="the fork waits for an answer")
    os.close(fds[0])
    proc.channel.close()
    assert read_line(proc) == "Function not implemented"


def test_a_listener_lost_in_transit_fails_process_creation_too(sessions):
    proc = start_session(WAIT_AND_FORK, notify=True)
    sessions.append(proc)
    assert read_line(proc) == "ready"
    wait_until(lambda: waiting_for_an_answer(proc.pid), what="the fork waits for an answer")
    proc.channel.close()  # the listener was still in the socket: closing it drops it
    assert read_line(proc) == "Function not implemented"


def test_a_closed_supervisor_fails_new_calls_with_enosys(sessions):
    supervisor = ProcessSupervisor()
    proc = start_session(WAIT_AND_FORK, supervisor=supervisor, args={"wait": True}, stdin=subprocess.PIPE)
    sessions.append(proc)
    assert read_line(proc) == "ready"
    wait_until(lambda: (supervisor.status(proc.pid) or False) and supervisor.status(proc.pid).listening)
    supervisor.close()
    assert not supervisor.alive
    proc.stdin.write(b"x")
    proc.stdin.flush()
    assert read_line(proc) == "Function not implemented"


def test_a_sessions_listener_is_let_go_when_its_last_task_ends(supervisor):
    proc = start_session(FORK_SOME + "import time\ntime.sleep(600)\n", supervisor=supervisor, cap=CAP)
    assert read_line(proc) == "forked"
    wait_until(lambda: supervisor.status(proc.pid).listening, what="the supervisor holds the listener")
    end_session(proc)
    wait_until(lambda: not supervisor.status(proc.pid).listening, what="the listener is let go")
    supervisor.unwatch(proc.pid)
    assert supervisor.status(proc.pid) is None


def test_the_census_follows_processes_that_end_and_begin(sessions):
    census = Census()
    proc = start_session(HOLD_SLEEPERS, args={"count": 3})
    sessions.append(proc)
    assert read_line(proc)["made"] == 3
    members = set(census.members({proc.pid})[proc.pid])
    assert len(members) == 4 and proc.pid in members
    child = max(members - {proc.pid})
    os.kill(child, 9)
    wait_until(lambda: strays.read_stat(child).ended, what="the child has ended")
    assert census.tasks({proc.pid}) == {proc.pid: 4}  # unreaped, it still holds its pid, as for RLIMIT_NPROC
    end_session(proc)
    sessions.remove(proc)
    wait_until(lambda: not census.members({proc.pid}), what="the session's processes are gone")


REUSE_PID = """
import os, time
for _ in range(50):
    with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
        fh.write(str(args["pid"] - 1))
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    if pid == args["pid"]:
        break
    os.kill(pid, 9)
    os.waitpid(pid, 0)
report(pid)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="choosing the next pid (ns_last_pid) needs root")
def test_the_census_tells_a_reused_pid_from_the_process_it_knew(sessions):
    """A pid classified as outside every session, reused by a process of a session, counts for that session."""
    census = Census()
    outsider = subprocess.Popen(["sleep", "600"], start_new_session=True)
    session = start_session("report('ready')\nimport time\ntime.sleep(600)\n", tier=None)
    sessions.append(session)
    assert read_line(session) == "ready"
    assert census.members({session.pid}) == {session.pid: [session.pid]}  # the outsider is known, outside
    outsider.kill()
    outsider.wait()
    reuser = start_session(REUSE_PID, tier=None, args={"pid": outsider.pid})
    sessions.append(reuser)
    if read_line(reuser) != outsider.pid:
        pytest.skip("another process took the pid first (a busy host)")
    assert sorted(census.members({reuser.pid})[reuser.pid]) == sorted([reuser.pid, outsider.pid])


SPIN = """
import os, time
report("spinning")
started, calls = time.monotonic(), 0
while time.monotonic() - started < args["seconds"]:
    os.kill(os.getpid(), 0)
    calls += 1
report({"calls": calls, "seconds": time.monotonic() - started})
"""


def test_a_session_spinning_on_supervised_calls_gets_answers_at_its_rate_only(supervisor, sessions):
    """Its callers wait in the kernel past the rate, so the server's thread is not theirs; others go on."""
    spinner = start_session(SPIN, supervisor=supervisor, args={"seconds": 2.0})
    sessions.append(spinner)
    assert read_line(spinner) == "spinning"
    bystander = start_session(FORK_SOME, supervisor=supervisor, args={"count": 50})
    sessions.append(bystander)
    assert read_line(bystander) == "forked"
    outcome = read_line(spinner)
    assert outcome["calls"] <= BURST + RATE * outcome["seconds"] * 1.1


def test_without_user_notification_the_policy_still_applies_and_the_host_is_told_why(supervisor, sessions):
    """A second listener is refused by the kernel (EBUSY), as a kernel without user notification would refuse the
    first: the policy is applied without the cap, and the worker says why over its socket."""
    code = (
        "import importlib.util, socket\n"
        "loader = importlib.util.spec_from_file_location('p', args['policy'])\n"
        "p = importlib.util.module_from_spec(loader); loader.loader.exec_module(p)\n"
        "ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "again = p.install(p.TierRules(*args['rules']), notify_sock=theirs)\n"
        "try:\n"
        "    socket.socket(socket.AF_INET)\n"
        "    refused = False\n"
        "except PermissionError:\n"
        "    refused = True\n"
        "report({'first': applied['processCap'], 'again': again['processCap'], 'said': ours.recv(1024).decode(),"
        " 'sockets refused': refused})\n"
    )
    outcome = run_session(
        code, supervisor=supervisor, args={"policy": str(POLICY), "rules": list(LandlockTier.seccomp)}
    )
    assert outcome["first"] is True and outcome["again"] is False and outcome["sockets refused"] is True
    assert outcome["said"].startswith("unavailable: user notification is unavailable: ")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    supervisor.watch("told", ours, os.getpid(), CAP)
    theirs.send(outcome["said"].encode())
    theirs.close()
    wait_until(lambda: supervisor.status("told").unavailable, what="the supervisor records why")
    assert supervisor.status("told").unavailable.startswith("user notification is unavailable: ")
    assert not supervisor.status("told").listening
