"""The per-session watchdog (``watchdog.py``) on real session processes: memory summed over a session (shared pages
once), memory-backed directories counted as memory, disk as the blocks files hold, and what happens past each
budget. Sessions run the seccomp policy of the Landlock tier, as this test's uid, as on a Space.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from azure_sessions.emulator.budgets import MIB, SessionBudget
from azure_sessions.emulator.inside import strays
from azure_sessions.emulator.watchdog import Exceeded, Watchdog, allocated_bytes
from tests.support.harness import wait_until
from tests.support.session_procs import end_session, read_line, start_session

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux")

GIB = 1024 * MIB
ALLOCATE = """
import os, time
for size in args.get("children", []):
    if os.fork() == 0:
        data = b"\\x01" * size
        time.sleep(600)
        os._exit(0)
own = b"\\x01" * args.get("own", 0)
for size in args.get("after_fork", []):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
report("started")
os.read(0, 1)
more = b"\\x02" * args.get("more", 0)
report("more")
time.sleep(600)
"""
"""Children allocating ``children`` bytes each, the session's first process ``own`` bytes, then children sharing it
(``after_fork``: how many); a byte on stdin makes the first process allocate ``more``."""


@pytest.fixture
def watchdog():
    dog = Watchdog(memory_interval=0.1, disk_interval=0.3)
    yield dog
    dog.close()


@pytest.fixture
def sessions():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        end_session(proc)


def session(sessions: list, code: str = ALLOCATE, **kwargs) -> subprocess.Popen:
    proc = start_session(code, stdin=subprocess.PIPE, **kwargs)
    sessions.append(proc)
    return proc


def members(proc: subprocess.Popen) -> set[int]:
    return {pid for pid, st in strays.process_table().items() if st.session == proc.pid and not st.ended}


def test_three_processes_of_one_session_end_at_its_memory_budget_and_another_is_untouched(watchdog, sessions):
    events: list[Exceeded] = []
    bystander = session(sessions, args={"children": [200 * MIB]})
    assert read_line(bystander) == "started"
    watchdog.watch("bystander", worker_pid=bystander.pid, on_exceeded=events.append)
    hog = session(sessions, args={"children": [GIB, GIB, GIB]})
    watchdog.watch("hog", worker_pid=hog.pid, budget=SessionBudget(memory_mb=2048), on_exceeded=events.append)
    assert read_line(hog) == "started"
    wait_until(lambda: events, timeout=60, what="the hog goes over its budget")
    wait_until(lambda: not watchdog.usage("hog").memory_over and watchdog.usage("hog").memory_bytes > GIB,
               timeout=60, what="the hog is back within its budget")  # fmt: skip
    assert {event.key for event in events} == {"hog"}
    for event in events:
        assert event.kind == "memory" and not event.worker_ended
        assert (
            event.message
            == f"the session used more than 2048 MiB of memory; process {event.ended[0]} (python) was ended"
        )
    assert watchdog.usage("hog").memory_bytes <= 2048 * MIB
    wait_until(lambda: len(members(hog)) == 4 - len(events), what="the ended processes are gone")
    assert hog.pid in members(hog) and len(events) in (1, 2)  # 3 GiB, or 2 GiB and the worker, are over 2 GiB
    assert len(members(bystander)) == 2 and watchdog.usage("bystander").memory_bytes > 200 * MIB
    wait_until(lambda: {strays.read_stat(pid).state for pid in members(hog)} == {"S"}, timeout=60,
               what="the survivors have allocated all they will")  # fmt: skip
    ticks = watchdog.ticks
    wait_until(lambda: watchdog.ticks > ticks + 1, what="a measurement of what they hold")
    assert watchdog.usage("hog").memory_bytes > GIB
    end_session(hog)  # what the session held returns to the host with its processes (the host's own free memory
    # is no measure of it on a shared machine: other work takes and gives back gigabytes meanwhile)
    wait_until(lambda: not members(hog), timeout=30, what="every process of the session is gone")


def test_pages_shared_after_a_fork_count_once(watchdog, sessions):
    """700 MiB shared by four processes: resident sizes sum to 2.8 GiB, the session holds 700 MiB."""
    events: list[Exceeded] = []
    proc = session(sessions, args={"own": 700 * MIB, "after_fork": [0, 0, 0]})
    assert read_line(proc) == "started"
    watchdog.watch("shared", worker_pid=proc.pid, budget=SessionBudget(memory_mb=2048), on_exceeded=events.append)
    ticks = watchdog.ticks
    wait_until(lambda: watchdog.ticks > ticks + 5, what="a few measurements")
    usage = watchdog.usage("shared")
    assert usage.processes == 4 and 700 * MIB < usage.memory_bytes < 1024 * MIB
    assert not events and len(members(proc)) == 4


def test_the_worker_is_ended_when_it_is_the_largest(watchdog, sessions):
    events: list[Exceeded] = []
    proc = session(sessions, args={"own": 400 * MIB})
    watchdog.watch("worker", worker_pid=proc.pid, budget=SessionBudget(memory_mb=256), on_exceeded=events.append)
    assert proc.wait(timeout=30) == -9
    (event,) = events
    assert event.worker_ended and event.ended == (proc.pid,)
    assert event.message == (
        "the session used more than 256 MiB of memory; its worker process was ended, so the session's variables were lost"
    )


def test_a_sparse_file_counts_what_it_holds(tmp_path: Path, watchdog, sessions):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "sparse.bin", "wb") as fh:
        fh.truncate(GIB)
    (data / "real.bin").write_bytes(os.urandom(8 * MIB))
    os.link(data / "real.bin", data / "same-file.bin")  # a hard link holds nothing more
    held = allocated_bytes([str(data)])
    assert 8 * MIB <= held < 9 * MIB
    proc = session(sessions)
    watchdog.watch("sparse", worker_pid=proc.pid, dirs=[data], budget=SessionBudget(disk_mb=64))
    wait_until(lambda: watchdog.usage("sparse").disk_bytes, what="a disk measurement")
    assert watchdog.usage("sparse").disk_bytes == held and not watchdog.usage("sparse").disk_over


WRITER = """
import os, time
if os.fork() == 0:
    with open(os.path.join(args["dir"], "flood.bin"), "wb") as fh:
        while True:
            fh.write(b"\\x03" * (1 << 20))
            fh.flush()
            time.sleep(0.01)
report("writing")
os.read(0, 1)
"""


def test_writing_past_the_disk_budget_is_stopped(tmp_path: Path, watchdog, sessions):
    events: list[Exceeded] = []
    proc = session(sessions, WRITER, args={"dir": str(tmp_path)})
    watchdog.watch("writer", worker_pid=proc.pid, dirs=[tmp_path], budget=SessionBudget(disk_mb=64),
                   on_exceeded=events.append, busy=lambda: True)  # fmt: skip
    assert read_line(proc) == "writing"
    wait_until(lambda: events, timeout=30, what="the writer goes over the disk budget")
    (event,) = events
    assert event.kind == "disk" and len(event.ended) == 1 and event.ended[0] != proc.pid
    assert event.message.startswith("the session's files took more than 64 MiB of disk (")
    assert event.message.endswith("MiB); the writing was interrupted: delete files to write again")
    wait_until(lambda: members(proc) == {proc.pid}, what="the writer has ended")
    size = (tmp_path / "flood.bin").stat().st_size
    assert watchdog.measure_now("writer").disk_over
    assert (tmp_path / "flood.bin").stat().st_size == size  # nothing writes any more
    (tmp_path / "flood.bin").unlink()
    assert not watchdog.measure_now("writer").disk_over


TMPFS = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x20000) == 0  # a mount namespace of its own, as a bubblewrap worker has
assert libc.mount(None, b"/", None, (1 << 14) | (1 << 18), None) == 0  # MS_REC | MS_PRIVATE
assert libc.mount(b"tmpfs", args["dir"].encode(), b"tmpfs", 0, b"size=1g") == 0
with open(os.path.join(args["dir"], "held.bin"), "wb") as fh:
    fh.write(b"\\x04" * (300 << 20))
report("written")
os.read(0, 1)
with open(os.path.join(args["dir"], "more.bin"), "wb") as fh:
    fh.write(b"\\x05" * (300 << 20))
report("more")
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root here (the bubblewrap tier's own /tmp)")
def test_a_memory_backed_tmp_counts_as_memory(tmp_path: Path, watchdog, sessions):
    events: list[Exceeded] = []
    proc = session(sessions, TMPFS, tier=None, args={"dir": str(tmp_path)})
    assert read_line(proc) == "written"
    watchdog.watch("tmpfs", worker_pid=proc.pid, memory_dirs=[f"/proc/{proc.pid}/root{tmp_path}"],
                   budget=SessionBudget(memory_mb=512), on_exceeded=events.append)  # fmt: skip
    wait_until(lambda: watchdog.usage("tmpfs").memory_dirs_bytes >= 300 * MIB, what="the tmpfs is measured")
    assert not watchdog.usage("tmpfs").memory_over
    proc.stdin.write(b"x")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == -9  # over: its only process, the worker, is ended, and its mounts with it
    assert events[0].worker_ended and "512 MiB" in events[0].message


@pytest.mark.skipif(Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
                    reason="the kernel's autogroups are off")  # fmt: skip
def test_a_sessions_scheduling_group_gets_its_nice_value(watchdog, sessions):
    proc = session(sessions)
    assert read_line(proc) == "started"
    watchdog.watch("nice", worker_pid=proc.pid, budget=SessionBudget(nice=10))
    wait_until(lambda: Path(f"/proc/{proc.pid}/autogroup").read_text().split()[-1] == "10",
               what="the autogroup's nice value is set")  # fmt: skip


def test_a_session_whose_processes_the_host_lists(watchdog, sessions):
    """``session`` as a callable: here two processes of different session ids, summed as one session."""
    first, second = (session(sessions, args={"own": 100 * MIB}) for _ in range(2))
    assert read_line(first) == read_line(second) == "started"
    watchdog.watch("listed", worker_pid=first.pid, session=lambda: [first.pid, second.pid])
    wait_until(lambda: watchdog.usage("listed").processes == 2, what="a measurement")
    wait_until(lambda: watchdog.usage("listed").memory_bytes > 200 * MIB, what="both processes are summed")


LATER = """
import os, time
report("idle")
os.read(0, 1)
if os.fork() == 0:
    time.sleep(600)
    os._exit(0)
report("forked")
time.sleep(600)
"""


def test_a_process_started_while_the_session_looks_idle_is_seen_at_once(watchdog, sessions):
    """By a background thread, say: no cell runs, the worker was alone. Seen within a few ticks (0.1 s here), not
    at the next idle disk measurement (10 s)."""
    proc = session(sessions, LATER)
    assert read_line(proc) == "idle"
    watchdog.watch("later", worker_pid=proc.pid)
    ticks = watchdog.ticks
    wait_until(lambda: watchdog.ticks > ticks + 2, what="a few measurements of the idle session")
    proc.stdin.write(b"x")
    proc.stdin.flush()
    assert read_line(proc) == "forked"
    wait_until(lambda: watchdog.usage("later").processes == 2, timeout=5, what="the new process is seen")


TREE_BOMB = """
import os, time
def grow(depth):
    for _ in range(2):
        try:
            if os.fork() == 0:
                if depth:
                    grow(depth - 1)
                time.sleep(600)
                os._exit(0)
        except OSError:
            pass
report("growing")
grow(9)  # at most 1022 processes, should the watchdog not act
time.sleep(600)
"""
FORK_A_FEW = """
import os
children = [os.fork() for _ in range(5)]
if 0 in children:
    os._exit(0)
for pid in children:
    os.waitpid(pid, 0)
report("forked")
"""


def test_a_fork_bomb_past_the_task_budget_is_ended_while_other_sessions_still_fork(watchdog, sessions):
    events: list[Exceeded] = []
    bomb = session(sessions, TREE_BOMB)
    watchdog.watch("bomb", worker_pid=bomb.pid, budget=SessionBudget(tasks=64), on_exceeded=events.append)
    assert read_line(bomb) == "growing"
    wait_until(lambda: events, what="the bomb passes its budget")
    other = session(sessions, FORK_A_FEW)
    assert read_line(other) == "forked"  # same uid, forking while the bomb is being ended
    wait_until(lambda: members(bomb) == {bomb.pid}, timeout=30, what="the bomb's processes are ended")
    assert {e.kind for e in events} == {"tasks"} and not any(e.worker_ended for e in events)
    assert events[0].message.startswith("the session ran more than 64 processes and threads (")
    assert "processes other than the worker were ended" in events[0].message
    newcomer = session(sessions, FORK_A_FEW)
    assert read_line(newcomer) == "forked"


BURST = """
import os, time
report("ready")
os.read(0, 1)
for _ in range(300):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
report("burst")
time.sleep(600)
"""


def test_a_burst_of_processes_brings_the_next_look_forward():
    """Between two ticks (10 s apart here) the machine's task count is watched: 300 new processes of a session that
    runs code are seen, and ended, long before the next tick was due (however many other programs end meanwhile)."""
    events: list[Exceeded] = []
    dog = Watchdog(memory_interval=10.0, disk_interval=10.0)
    proc = start_session(BURST, stdin=subprocess.PIPE)
    try:
        assert read_line(proc) == "ready"
        dog.watch("burst", worker_pid=proc.pid, budget=SessionBudget(tasks=64), on_exceeded=events.append,
                  busy=lambda: True)  # fmt: skip
        wait_until(lambda: dog.ticks >= 1, what="the first tick")
        ticks, started = dog.ticks, time.monotonic()
        proc.stdin.write(b"x")
        proc.stdin.flush()
        wait_until(lambda: events, timeout=8, what="the burst is seen before the next tick was due")
        assert time.monotonic() - started < 8.0 and dog.ticks > ticks and dog.sentinel_ticks >= 1
        assert events[0].kind == "tasks" and not events[0].worker_ended
        wait_until(lambda: members(proc) == {proc.pid}, timeout=30, what="the burst's processes are ended")
    finally:
        dog.close()
        end_session(proc)


def test_one_session_cannot_hold_300_sleeping_processes(watchdog, sessions):
    events: list[Exceeded] = []
    holder = session(sessions, "import os, time\n" + "\n".join([
        "for _ in range(300):",
        "    if os.fork() == 0:",
        "        time.sleep(600)",
        "        os._exit(0)",
        "report('held')",
        "time.sleep(600)",
    ]))  # fmt: skip
    watchdog.watch("holder", worker_pid=holder.pid, budget=SessionBudget(tasks=64), on_exceeded=events.append)
    assert read_line(holder) == "held"
    wait_until(lambda: events and len(members(holder)) == 1, timeout=30, what="the held processes are ended")
    assert holder.poll() is None  # the worker goes on


def test_threads_past_the_task_budget_in_the_worker_end_it(watchdog, sessions):
    events: list[Exceeded] = []
    code = "import threading, time\nfor _ in range(100):\n    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\nreport('threads')\ntime.sleep(600)\n"
    proc = session(sessions, code)
    watchdog.watch("threads", worker_pid=proc.pid, budget=SessionBudget(tasks=64), on_exceeded=events.append)
    assert proc.wait(timeout=30) == -9
    assert events[0].worker_ended and events[0].kind == "tasks"
    assert events[0].message.endswith("its worker process was ended, so the session's variables were lost")
