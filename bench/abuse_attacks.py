"""The attacks of the abuse benchmark (issue 16), each a function of an `Arena` (bench/abuse_arena.py) that returns
what the attacker got and whether that was contained. Each is bounded in count and time; the counts shrink in quick
mode. They judge outcomes (a refusal, a bound, a bystander's answer), never today's behaviour: any contained outcome
passes, whatever form the fix takes.

The cells an attack sends run as "No model" messages in the attacker's own session and print one line,
`ABUSE-RESULT {json}`, that the attack reads back from the chat.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

import requests

from bench.abuse_arena import ATTACKER_ADDRESS, MARK, Arena, answered_two, marked, mib, seconds
from bench.common import Row
from bench.tab import Reply, Tab

SESSION_MEMORY_BOUND = 4 * 2**30  # a session's memory, all its processes and its tmpfs together (today's per-process)
PER_CLIENT_SANDBOXES = 25  # a quarter of the pool's 100: one client must not hold more
GROWTH_BOUND = 128 * 2**20  # what one visitor may add to the server's memory or disk while its session lives
ANSWER_BOUND = 10.0  # seconds within which a heavy action must end (done, bounded or refused)
PREVIEW_BOUND = 1.0  # "a 30,000-column CSV previews its first columns in well under a second"
TMPFS_MARGIN = 64 * 2**20  # the host's shared memory is shared with every other program: some noise
WARM_SANDBOXES = 4  # the app's default PLAYGROUND_WARM_SANDBOXES: fresh visitors beyond it need a fork


@dataclass
class Outcome:
    """What one attack found. `contained` is its own target's verdict (None: nothing to judge)."""

    got: str
    contained: bool | None
    target: str
    end: str = "new-session"  # how the attacker's sessions end before "after": "new-session" or "close"
    rows: list[Row] = field(default_factory=list)
    skipped: str = ""


def cell(code: str, **values: object) -> str:
    """A cell's code with its __NAME__ placeholders filled in (__MARK__ always)."""
    for name, value in {"MARK": MARK, **values}.items():
        code = code.replace(f"__{name}__", str(value))
    return code


def skip(reason: str) -> Outcome:
    return Outcome("", None, "", skipped=reason)


def run_cell(tab: Tab, arena: Arena, code: str, timeout: float = 60.0) -> tuple[Reply, dict]:
    """Run `code` in the tab's session; returns the reply and the JSON the cell printed after the marker."""
    reply = arena.bounded(lambda: tab.say(code), timeout, "no answer")
    return reply, marked(reply) or {}


def why(reply: Reply) -> str:
    """What a reply said, in a few words: its error, else the last line of its answer's text (an exception's)."""
    if reply.error:
        return reply.error[:160]
    lines = [line for line in reply.answer.strip().splitlines() if line.strip() and not line.startswith(("```", "*"))]
    return lines[-1][:160] if lines else "no answer"


def fresh_row(replies: list[Reply], when: str) -> tuple[Row, bool]:
    answered = sum(answered_two(r) for r in replies)
    failed = [r for r in replies if not answered_two(r)]
    detail = f"; first failure: {why(failed[0])}" if failed else ""
    ok = answered == len(replies)
    return (
        Row(
            f"new visitors' first message {when}",
            f"{len(replies)} new visitor{'s' if len(replies) != 1 else ''} (the warm pool holds {WARM_SANDBOXES})"
            + (", one after the other" if len(replies) > 1 else ""),
            f"{answered} of {len(replies)} answered{detail}",
            target="all answered",
            met=ok,
        ),
        ok,
    )


# ---------------------------------------------------------------------------------------------------- 1. other pids
PIDS_CELL = r"""
import ctypes, errno, gc, json, os, platform, resource
GUESSED_SERVER, GUESSED_TEMPLATE = __GUESSES__  # pids are sequential and getpriority shows which exist
me, template = os.getpid(), os.getppid()
leaked = set()
for obj in gc.get_objects():
    if isinstance(obj, dict) and "protected_pids" in obj:
        leaked.update(int(p) for p in obj["protected_pids"])
def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
try:
    os.listdir("/proc")
    proc = "readable"
except OSError as exc:
    proc = type(exc).__name__
grand = parent_of(template)
found = sorted((leaked | ({grand} if grand and grand > 1 else set())) - {me, template, 0, 1})
if template <= 1:  # 0: the parent is outside the sandbox's pid namespace (and pid 0 would mean this process)
    template = GUESSED_TEMPLATE
servers = sorted((set(found) | {GUESSED_SERVER}) - {me, template, 0, 1})
visible = 0
for pid in range(1, me + 2000):
    try:
        os.getpriority(os.PRIO_PROCESS, pid)
        visible += 1
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())
def attempt(call):
    try:
        call()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def ioprio(pid):
    if IOPRIO_SET is None or libc.syscall(IOPRIO_SET, 1, pid, 3 << 13) != 0:
        raise OSError(ctypes.get_errno() if IOPRIO_SET else errno.ENOSYS, "ioprio_set")
cpu = min(os.sched_getaffinity(0))
def calls(pid):
    return {
        "setpriority": attempt(lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)),
        "sched_setaffinity": attempt(lambda: os.sched_setaffinity(pid, {cpu})),
        "sched_setscheduler": attempt(lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))),
        "ioprio_set": attempt(lambda: ioprio(pid)),
        "prlimit (read)": attempt(lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE)),
    }
done = {"template": calls(template), "servers": {str(pid): calls(pid) for pid in servers}}
done["template"]["prlimit RLIMIT_NPROC=1"] = attempt(lambda: resource.prlimit(template, resource.RLIMIT_NPROC, (1, 1)))
print("__MARK__ " + json.dumps({"template": template, "servers": servers, "found": found, "leaked": sorted(leaked),
                               "parent": os.getppid(), "proc": proc,
                           "visible": visible, "done": done}))
"""

KILL_CELL = r"""
import errno, json, resource
done = {}
for pid in __SERVERS__:
    try:
        resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1))
        done[str(pid)] = "ok"
    except OSError as exc:
        done[str(pid)] = errno.errorcode.get(exc.errno, str(exc.errno))
print("__MARK__ " + json.dumps(done))
"""


def other_pids(arena: Arena) -> Outcome:
    """Resource and scheduling calls on the server's and the template's pids, found as an attacker would."""
    tab = arena.tab()
    guesses = (arena.app.pid, arena.app.template_pid() or 0)
    reply, found = run_cell(tab, arena, cell(PIDS_CELL, GUESSES=repr(guesses)), 60)
    if not found:
        return Outcome(f"the probe cell gave no result ({why(reply)})", None, "every call refused")
    arena.probe("during")
    fresh, fresh_ok = fresh_row(arena.fresh_first_messages(WARM_SANDBOXES + 1), "after the calls")
    servers = found.get("servers") or []
    killed: dict = {}
    if servers:
        _, killed = run_cell(tab, arena, cell(KILL_CELL, SERVERS=repr(servers)), 10)
        deadline = time.monotonic() + 2  # a CPU limit below what the server used takes effect at its next tick
        while arena.app.running() and time.monotonic() < deadline:
            time.sleep(0.1)
    done = found["done"]
    server = arena.app.pid
    allowed = {"template": [name for name, result in done["template"].items() if result == "ok"]}
    for pid, results in done["servers"].items():
        role = {server: " (the server)", arena.app.proc.pid: " (the server's launcher)"}.get(int(pid), "")
        allowed[f"pid {pid}{role}"] = [name for name, result in results.items() if result == "ok"] + (
            ["prlimit RLIMIT_CPU=1"] if killed.get(pid) == "ok" else []
        )
    if servers and not killed and not arena.app.running():  # the server died before it could answer
        allowed["the server"] = ["prlimit RLIMIT_CPU=1 (it died at once)"]
    succeeded = "; ".join(f"{target}: {', '.join(names)}" for target, names in allowed.items() if names)
    if found["leaked"]:
        how_found = f"the worker's configuration leaked pids {found['leaked']}"
    elif found["found"]:
        how_found = f"found the server's pids {found['found']} through /proc"
    else:
        how_found = "found no pid of the server by itself (so the server's pid was guessed)"
    parent = found.get("parent", 0)
    got = (
        f"{how_found}; the worker's parent: "
        + (f"{parent} (the template)" if parent == found["template"] else f"{parent} (the template's pid was guessed)")
        + f"; /proc: {found['proc']}; {found['visible']} pids visible to getpriority. Succeeded: "
        + (succeeded or "nothing (every call refused)")
    )
    return Outcome(got, not succeeded and fresh_ok, "every call on a pid outside the session refused", rows=[fresh])


# ---------------------------------------------------------------------------------------------------- 1. SysV IPC
SHM_CELL = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.restype, libc.shmget.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmat.restype, libc.shmat.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
KEY, SIZE, CANARY, CREATE = __ARGS__
shmid = libc.shmget(KEY, SIZE if CREATE else 0, (0o1000 | 0o600) if CREATE else 0o600)
done = {"shmget": "ok" if shmid >= 0 else os.strerror(ctypes.get_errno())}
if shmid >= 0:
    addr = libc.shmat(shmid, None, 0 if CREATE else 0o10000)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        done["shmat"] = os.strerror(ctypes.get_errno())
    else:
        if CREATE:
            ctypes.memset(addr, 0x5A, SIZE)
            ctypes.memmove(addr, CANARY.encode(), len(CANARY))
        else:
            done["read"] = ctypes.string_at(addr, len(CANARY)).decode("latin-1")
        libc.shmdt(addr)
print("__MARK__ " + json.dumps(done))
"""


def sysv_shm(arena: Arena) -> Outcome:
    """A SysV shared memory segment made in one session, left after the session is deleted, read from another."""
    size = arena.scale(256, 64) * 2**20
    key, canary = secrets.randbelow(2**30) + 1, "shm-canary-" + secrets.token_hex(8)
    maker = arena.tab()
    _, made = run_cell(maker, arena, cell(SHM_CELL, ARGS=repr((key, size, canary, True))))
    left_before = arena.app.footprint().sysv_shm_bytes
    arena.end_tab(maker)
    time.sleep(1.0)
    left = arena.app.footprint().sysv_shm_bytes
    arena.probe("during")
    reader = arena.tab()
    _, read = run_cell(reader, arena, cell(SHM_CELL, ARGS=repr((key, 0, canary, False))))
    stolen = read.get("read") == canary
    got = (
        f"shmget of {mib(size)}: {made.get('shmget', 'no result')}; after the session's deletion "
        f"{mib(left)} of SysV memory of the app's user left (was {mib(left_before)}); another session: "
        f"shmget {read.get('shmget', 'no result')}" + (", read the first session's canary" if stolen else "")
    )
    return Outcome(got, made.get("shmget") != "ok" or (not stolen and left == 0),
                   "refused, or gone with its session and unreadable from another")  # fmt: skip


# ---------------------------------------------------------------------------------------------------- 2. processes
SLEEPERS_CELL = r"""
import json, subprocess
procs, error = [], ""
for _ in range(__COUNT__):
    try:
        procs.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        break
print("__MARK__ " + json.dumps({"started": len(procs), "error": error}))
"""

SUBPROCESS_PROBE = "import subprocess\nsubprocess.run(['true']).returncode == 0 and 1 + 1"


def _other_session_subprocess(arena: Arena) -> tuple[bool, str]:
    """Whether the bystander's running session can still start a subprocess."""
    reply = arena.bounded(lambda: arena.bystander.say(SUBPROCESS_PROBE), arena.probe_timeout, "no answer")
    return answered_two(reply), why(reply)


def _ended_by_watchdog(reply: Reply) -> str:
    """What the watchdog said of a session past its task budget, in a few words ("" when it said nothing)."""
    ended = re.search(r"ran more than (\d+) processes and threads \((\d+)\)", reply.answer or "")
    return f"the watchdog ended it at {ended[2]} tasks (budget {ended[1]}) and interrupted its cell" if ended else ""


def sleeping_processes(arena: Arena) -> Outcome:
    """~300 sleeping processes held by one session; then new visitors send their first message."""
    count = 300
    tab = arena.tab()
    reply, found = run_cell(tab, arena, cell(SLEEPERS_CELL, COUNT=count), 90)
    arena.probe("during")
    other_ok, other_why = _other_session_subprocess(arena)
    fresh, fresh_ok = fresh_row(arena.fresh_first_messages(WARM_SANDBOXES + 1), "while they sleep")
    started = f"started {found['started']} of {count} sleeping processes" if found else ""
    got = (
        (started or _ended_by_watchdog(reply) or f"the cell gave no result: {why(reply)}")
        + (f" (then {found['error']})" if found.get("error") else "")
        + f"; another running session {'could' if other_ok else 'could not'} start a subprocess"
        + ("" if other_ok else f" ({other_why})")
    )
    return Outcome(got, other_ok and fresh_ok, "other sessions still start processes; new visitors are served",
                   rows=[fresh])  # fmt: skip


FORK_BOMB_CELL = r"""
import json, os, time
me, start, made, refused = os.getpid(), time.time(), 0, 0
while time.time() - start < __SPAN__:
    try:
        if os.fork() == 0:
            made = 0
            continue
        made += 1
    except OSError:
        refused += 1
        time.sleep(0.05)
if os.getpid() != me:
    time.sleep(__HOLD__)
    os._exit(0)
print("__MARK__ " + json.dumps({"forks": made, "refused": refused}))
"""


def fork_bomb(arena: Arena) -> Outcome:
    """A fork bomb (every process forks for a few seconds, then holds its place for a while and leaves)."""
    span, hold = arena.scale(8, 5), arena.scale(25, 12)
    tab = arena.tab()
    code = cell(FORK_BOMB_CELL, SPAN=span, HOLD=hold)
    reply, found = arena.alongside(lambda: run_cell(tab, arena, code, span + 30), lead=span / 2, count=1)
    arena.note_peak()
    other_ok, other_why = _other_session_subprocess(arena)
    fresh, fresh_ok = fresh_row(arena.fresh_first_messages(WARM_SANDBOXES + 1), "while the bomb's processes live")
    ended = _ended_by_watchdog(reply)
    got = (
        f"{arena.peak.workers} processes under the sandbox template at the peak (sampled)"
        + (f"; {ended}" if ended else "" if found else f" (the cell gave no result: {why(reply)})")
        + f"; another running session {'could' if other_ok else 'could not'} start a subprocess"
        + ("" if other_ok else f" ({other_why})")
    )
    return Outcome(got, other_ok and fresh_ok, "other sessions still start processes; new visitors are served",
                   rows=[fresh])  # fmt: skip


# ---------------------------------------------------------------------------------------------------- 3. memory
HOLDERS_CELL = r"""
import json, subprocess, sys
HOLDER = ("import time\nb = bytearray(__SIZE__)\nb[::4096] = b'\\x01' * len(range(0, len(b), 4096))\n"
          "print('held', flush=True)\ntime.sleep(__HOLD__)")
procs = [subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
         for _ in range(3)]
held, errors = 0, []
for proc in procs:
    if proc.stdout.readline().startswith("held"):
        held += 1
    else:
        errors.append((proc.wait(), proc.stderr.read().strip().splitlines()[-1:]))
print("__MARK__ " + json.dumps({"held": held, "errors": errors}))
"""


def memory_holders(arena: Arena) -> Outcome:
    """Three processes of one session, each holding 2 GiB (1.5 GiB in quick mode)."""
    size = arena.scale(2 * 2**30, 3 * 2**29)
    hold = arena.scale(12, 8)
    before = arena.app.footprint()
    tab = arena.tab()
    code = cell(HOLDERS_CELL, SIZE=size, HOLD=hold)
    reply, found = run_cell(tab, arena, code, 60)
    peak = arena.note_peak()
    arena.probe("during")
    grew = max(peak.workers_pss, arena.peak.workers_pss) - before.workers_pss
    host = before.host_available - arena.peak.host_available
    got = (
        f"{found.get('held', '?')} of 3 processes held {mib(size)} each"
        + (f" (refused: {found['errors'][0]})" if found.get("errors") else "")
        + ("" if found else f" (no result: {why(reply)})")
        + f"; the sandboxes' memory grew by {mib(grew)}, host memory available fell by {mib(host)}"
    )
    return Outcome(got, grew <= SESSION_MEMORY_BOUND, f"one session holds ≤ {mib(SESSION_MEMORY_BOUND)} in all")


TMPFS_CELL = r"""
import json, os, resource, subprocess, sys
def fill(directory, limit=4 << 30):
    total, block = 0, b"\xa5" * (1 << 20)
    try:
        with open(os.path.join(directory, "fill.bin"), "wb") as fh:
            while total < limit:
                fh.write(block)
                total += len(block)
    except OSError as exc:
        return total, exc.strerror
    return total, ""
done = {"tmp": fill("/tmp"), "shm": fill("/dev/shm") if os.path.isdir("/dev/shm") else (0, "no /dev/shm")}
done["rlimit_as"] = resource.getrlimit(resource.RLIMIT_AS)[0]
if __ALLOCATE__:
    step = 256 << 20
    code = ("import sys\nchunks = []\nwhile len(chunks) < 24:\n    b = bytearray(%d)\n    b[::4096] = b'\\x01' * "
            "len(range(0, len(b), 4096))\n    chunks.append(b)\n    print(len(chunks), flush=True)" % step)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.split()
    done["allocated"] = (int(lines[-1]) if lines else 0) * step
print("__MARK__ " + json.dumps(done))
"""


def tmpfs_fill(arena: Arena) -> Outcome:
    """Sessions fill their private tmpfs /tmp and /dev/shm (bubblewrap tier); one then allocates memory as well."""
    if "bubblewrap" not in arena.app.tier:
        return skip(
            f"needs the bubblewrap tier (run as root where user namespaces work); the app took {arena.app.tier}"
        )
    sessions = arena.scale(3, 2)
    before = arena.app.footprint()
    results, replies = [], []
    for index in range(sessions):
        code = cell(TMPFS_CELL, ALLOCATE=index == sessions - 1)
        reply, found = run_cell(arena.tab(), arena, code, 120)
        results.append(found)
        replies.append(reply)
    arena.note_peak()
    arena.probe("during")
    pinned = arena.peak.host_shmem - before.host_shmem
    last = results[-1] if results else {}
    tmpfs = sum(last.get(k, (0, ""))[0] for k in ("tmp", "shm"))
    total = tmpfs + last.get("allocated", 0)
    # A cell its session's budgets stopped (the disk's interrupt, the memory's end of a process) prints no result:
    # that is the containment this attack looks for, said in the budget's own words.
    stopped = [why(reply) for reply, found in zip(replies, results, strict=True) if not found]
    by_budget = bool(stopped) and all("SessionBudgetExceeded" in text for text in stopped)
    got = (
        f"{sessions} sessions pinned {mib(pinned)} of host memory in tmpfs; "
        + (
            f"the last one's /tmp {mib(last.get('tmp', (0, ''))[0])}, /dev/shm {mib(last.get('shm', (0, ''))[0])}, "
            f"then {mib(last.get('allocated', 0))} more in a process: {mib(total)} in all "
            f"(its per-process limit: {mib(last.get('rlimit_as') or 0)})"
            if last
            else "the last one was stopped by its budgets"
        )
        + (f"; {len(stopped)} of {sessions} cells stopped: {stopped[-1]}" if stopped else "")
    )
    for tab in list(arena.attackers):  # the sessions end here: their tmpfs must go with them
        arena.end_tab(tab)
    deadline = time.monotonic() + 10
    while (
        left := arena.app.footprint().host_shmem - before.host_shmem
    ) > TMPFS_MARGIN and time.monotonic() < deadline:
        time.sleep(0.5)
    freed = Row("tmpfs memory once its sessions ended", "the host's shared memory (tmpfs pages), after − before",
                f"{'−' if left <= -(2**20) else '+'}{mib(abs(left))}", target=f"≤ +{mib(TMPFS_MARGIN)}",
                met=left <= TMPFS_MARGIN)  # fmt: skip
    contained = pinned <= TMPFS_MARGIN and ((bool(last) and total <= SESSION_MEMORY_BOUND) or by_budget)
    return Outcome(got, contained, f"no tmpfs memory pinned; a session holds ≤ {mib(SESSION_MEMORY_BOUND)} in all, "
                   "or its budgets stop it", rows=[freed])  # fmt: skip


# ---------------------------------------------------------------------------------------------------- 4. many tabs
def many_tabs(arena: Arena) -> Outcome:
    """Many tabs of one client (distinct browsers, one address) each send one message; then a new visitor."""
    count = arena.scale(200, 30)
    opened = arena.tabs(count)
    tabs = [t for t in opened if isinstance(t, Tab)]

    def first(tab: Tab) -> Reply:
        return arena.bounded(lambda: tab.say("1+1"), 60, "no answer")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(first, tabs))
    served = sum(answered_two(r) for r in replies)
    refusals = [why(r) for r in replies if not answered_two(r)]
    arena.note_peak()
    arena.probe("during")
    fresh, fresh_ok = fresh_row(arena.fresh_first_messages(1), "while the tabs are open")
    got = (
        f"{served} of {count} tabs got a sandbox ({arena.peak.workers} sandbox processes at the peak)"
        + (f"; {len(opened) - len(tabs)} pages refused" if len(tabs) < len(opened) else "")
        + (f"; refused: {refusals[0]}" if refusals else "")
    )
    contained = served <= PER_CLIENT_SANDBOXES and fresh_ok
    return Outcome(got, contained, f"one client gets ≤ {PER_CLIENT_SANDBOXES} sandboxes; new visitors are served",
                   end="close", rows=[fresh])  # fmt: skip


# ---------------------------------------------------------------------------------------------------- 5. run slots
def sleeping_runs(arena: Arena) -> Outcome:
    """Sixteen tabs of one client each run `time.sleep(S)`; the bystander sends `1+1` meanwhile."""
    tabs_count, nap = 16, arena.scale(40, 8)
    tabs = [t for t in arena.tabs(tabs_count) if isinstance(t, Tab)]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(tabs_count)
    started = time.perf_counter()
    futures = [pool.submit(arena.bounded, lambda t=t: t.say(f"import time\ntime.sleep({nap})"), nap * 3, "no answer")
               for t in tabs]  # fmt: skip
    time.sleep(2.0)
    arena.probe("during", 1, timeout=nap + 30)
    replies = [f.result() for f in futures]
    pool.shutdown()
    at_once = sum(1 for r in replies if r.ok and r.seconds <= nap + 5)
    refused = [why(r) for r in replies if not r.ok]
    got = f"{at_once} of {tabs_count} sleeps ran at once (all ended after {time.perf_counter() - started:.0f} s)" + (
        f"; refused or failed: {refused[0]}" if refused else ""
    )
    return Outcome(got, at_once < tabs_count, "one client cannot hold every run slot")


# ---------------------------------------------------------------------------------------------------- 6. growth
def _growth(arena: Arena, before) -> tuple[int, int, str]:
    peak = arena.note_peak()
    ram = max(arena.peak.app_rss, peak.app_rss) - before.app_rss
    disk = max(arena.peak.temp_bytes, peak.temp_bytes) - before.temp_bytes
    entries = max(arena.peak.temp_entries, peak.temp_entries) - before.temp_entries
    return ram, disk, f"server RSS +{mib(ram)}, its temp files +{mib(disk)} (+{entries} entries)"


def _grew_within(ram: int, disk: int) -> bool:
    return ram <= GROWTH_BOUND and disk <= GROWTH_BOUND


GROWTH_TARGET = f"the server keeps ≤ {mib(GROWTH_BOUND)} of memory and of disk for it"


def output_flood(arena: Arena) -> Outcome:
    """Three cells printing tens of MB each."""
    size = arena.scale(30, 8)
    before = arena.app.footprint()
    tab = arena.tab()
    loop = f"import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range({size} * 1024):\n    sys.STREAM.write(line)"
    codes = [loop.replace("STREAM", "stdout"), loop.replace("STREAM", "stderr"), f"'x' * ({size} << 20)"]
    replies = [arena.bounded(lambda code=code: tab.say(code), 90, "no answer") for code in codes]
    arena.probe("during")
    ram, disk, text = _growth(arena, before)
    answered = sum(r.ok for r in replies)
    slowest = seconds(max(r.seconds for r in replies))
    got = f"{size} MiB on stdout, on stderr and as a value ({answered} of 3 answered, slowest {slowest}): {text}"
    return Outcome(got, _grew_within(ram, disk), GROWTH_TARGET)


def large_image(arena: Arena) -> Outcome:
    """A cell that shows one large image of noise (it does not compress)."""
    side = arena.scale(4000, 1500)
    before = arena.app.footprint()
    tab = arena.tab()
    code = (
        "import numpy as np, matplotlib.pyplot as plt\n"
        f"fig = plt.figure(figsize=({side} / 100, {side} / 100), dpi=100)\n"
        f"fig.figimage(np.random.default_rng(0).integers(0, 255, ({side}, {side}, 3), dtype=np.uint8))\n"
        "plt.show()"
    )
    reply = arena.bounded(lambda: tab.say(code), 120, "no answer")
    arena.probe("during")
    ram, disk, text = _growth(arena, before)
    left_out = next((line for line in (reply.answer or "").splitlines() if "ImageTooLarge" in line), "")
    shown = f"left out by the sandbox: {left_out.strip()[:120]}" if left_out else "shown" if reply.ok else why(reply)
    got = f"a {side}×{side} image ({shown}, {seconds(reply.seconds)}): {text}"
    return Outcome(got, _grew_within(ram, disk), GROWTH_TARGET)


SPARSE_CELL = r"""
import json
for name, size in __FILES__:
    with open("/mnt/data/" + name, "wb") as fh:
        fh.truncate(size)
print("__MARK__ " + json.dumps({"made": len(__FILES__)}))
"""


def sparse_files(arena: Arena) -> Outcome:
    """A 1 GiB sparse file selected twice in the file browser; four 24 MiB sparse files offered in the chat."""
    big = arena.scale(2**30, 2**28)
    files = [("huge.bin", big)] + [(f"offered-{i}.bin", 24 * 2**20) for i in range(4)]
    before = arena.app.footprint()
    tab = arena.tab()
    reply, _ = run_cell(tab, arena, cell(SPARSE_CELL, FILES=repr(files)), 120)
    offered = reply.answer.count("📎")
    after_offer = arena.note_peak().temp_bytes - before.temp_bytes
    if "huge.bin" not in tab.file_names():
        arena.bounded(lambda: tab.act("refresh-btn", "click"), 30, "no listing")
    selections = [arena.bounded(lambda: tab.select_file("huge.bin"), 120, "no preview") for _ in range(2)]
    arena.probe("during")
    ram, disk, text = _growth(arena, before)
    got = (
        f"{offered} files offered in the chat (+{mib(after_offer)} on the server's disk); the {mib(big)} sparse file "
        f"selected twice ({', '.join(seconds(s.seconds) if s.ok else why(s) for s in selections)}): {text}"
    )
    return Outcome(got, _grew_within(ram, disk), GROWTH_TARGET)


def huge_message(arena: Arena) -> Outcome:
    """A 10 MiB chat message."""
    size = 10 * 2**20
    wait = arena.scale(30, 12)
    tab = arena.tab()
    text = "1+1  # " + "x" * (size - 7)
    reply = arena.alongside(lambda: arena.bounded(lambda: tab.say(text), wait, "no answer"), lead=1.0)
    if answered_two(reply):
        result = f"ran and answered in {seconds(reply.seconds)}"
    elif reply.completed or (reply.error and "within" not in reply.error):
        result = f"refused in {seconds(reply.seconds)}: {why(reply)}"
    else:
        result = f"no answer within {wait} s"
    return Outcome(f"a {mib(size)} message: {result}", reply.seconds <= ANSWER_BOUND and "within" not in reply.error,
                   f"answered or refused (saying why) within {ANSWER_BOUND:.0f} s")  # fmt: skip


def idle_sessions(arena: Arena) -> Outcome:
    """Thousands of fresh Gradio sessions (a page load each) that never send a message."""
    count = arena.scale(2000, 100)
    before = arena.app.footprint()
    from concurrent.futures import ThreadPoolExecutor

    def visit(_: int) -> bool:
        try:
            tab = arena.open_tab(ATTACKER_ADDRESS)
        except Exception:
            return False
        tab.close()
        return True

    started = time.perf_counter()
    budget = arena.scale(45.0, 20.0)  # bounded in time as well as in count

    def visit_in_time(index: int) -> bool:
        return time.perf_counter() - started < budget and visit(index)

    with ThreadPoolExecutor(16) as pool:
        loaded = sum(pool.map(visit_in_time, range(count)))
    took = time.perf_counter() - started
    arena.probe("during")
    ram, disk, text = _growth(arena, before)
    got = f"{loaded} of {count} page loads in {took:.0f} s: {text}"
    return Outcome(got, _grew_within(ram, disk), GROWTH_TARGET, end="close")


def tiny_files(arena: Arena) -> Outcome:
    """A cell writes thousands of tiny files, which the chat offers."""
    count = arena.scale(2000, 300)
    before = arena.app.footprint()
    tab = arena.tab()
    code = f"for i in range({count}):\n    open(f'/mnt/data/tiny-{{i:05d}}.txt', 'w').write(str(i))\n{count}"
    reply = arena.bounded(lambda: tab.say(code), arena.scale(120, 45), "no answer")
    arena.probe("during")
    ram, disk, text = _growth(arena, before)
    entries = arena.peak.temp_entries - before.temp_entries
    got = f"{count} files written: {'answered' if reply.ok else why(reply)} in {seconds(reply.seconds)}; " + text
    return Outcome(got, reply.ok and reply.seconds <= ANSWER_BOUND and entries <= 200 and _grew_within(ram, disk),
                   f"answered within {ANSWER_BOUND:.0f} s; ≤ 200 entries added to the server's temp files")  # fmt: skip


# ---------------------------------------------------------------------------------------------------- 7. stalls
def wide_csv(arena: Arena) -> Outcome:
    """Previewing a one-line CSV with 30,000 columns while the bystander sends `1+1`."""
    columns = arena.scale(30_000, 10_000)
    tab = arena.tab()
    code = f"open('/mnt/data/wide.csv', 'w').write(','.join(f'c{{i}}' for i in range({columns})) + '\\n')\n{columns}"
    run_cell(tab, arena, code, 60)
    if "wide.csv" not in tab.file_names():
        arena.bounded(lambda: tab.act("refresh-btn", "click"), 30, "no listing")
    reply = arena.alongside(lambda: arena.bounded(lambda: tab.select_file("wide.csv"), arena.scale(90, 40), "no preview"),
                            lead=0.3)  # fmt: skip
    caption = str(tab.value("preview-caption") or "")[:120]
    result = f"previewed in {seconds(reply.seconds)}" if reply.ok else why(reply)
    got = f"{columns:,} columns: {result}" + (f" ({caption})" if caption else "")
    return Outcome(got, reply.ok and reply.seconds <= PREVIEW_BOUND,
                   f"previewed (its first columns, or too wide) within {PREVIEW_BOUND:.0f} s")  # fmt: skip


def sparse_zip(arena: Arena) -> Outcome:
    """Exporting /mnt/data as a zip of sparse files while the bystander sends `1+1`."""
    count, size = 2, arena.scale(2**30, 2**28)
    tab = arena.tab()
    files = [(f"sparse-{i}.bin", size) for i in range(count)]
    run_cell(tab, arena, cell(SPARSE_CELL, FILES=repr(files)), 60)
    cpu_before = _cpu_seconds(arena.app.pid)
    reply = arena.alongside(lambda: arena.bounded(lambda: tab.act("export-zip", "click"), arena.scale(120, 45),
                                                  "no export"), lead=0.3)  # fmt: skip
    cpu = _cpu_seconds(arena.app.pid) - cpu_before
    status = str(tab.value("file-status") or "")[:100]
    result = f"ended in {seconds(reply.seconds)}" if reply.ok else why(reply)
    got = f"zip of {count} sparse files of {mib(size)}: {result}, {cpu:.1f} s of the server's CPU" + (
        f" ({status})" if status else ""
    )
    return Outcome(got, reply.ok and reply.seconds <= ANSWER_BOUND,
                   f"the export ends (a zip, or a refusal) within {ANSWER_BOUND:.0f} s")  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    from azure_sessions.emulator.inside.strays import read_stat

    stat = read_stat(pid)
    return stat.cpu_ticks / os.sysconf("SC_CLK_TCK") if stat else 0.0


# ---------------------------------------------------------------------------------------------------- 8. uploads
def anonymous_uploads(arena: Arena) -> Outcome:
    """Uploads to Gradio's /gradio_api/upload with no page session, and one upload aborted halfway."""
    size = arena.scale(50, 10) * 10**6
    api = arena.app.url + "gradio_api/upload"
    before = arena.app.footprint()
    statuses = []
    blob = os.urandom(size)
    for index in range(3):
        try:
            reply = requests.post(api, files={"files": (f"anon-{index}.bin", blob)}, timeout=60,
                                  headers={"X-Forwarded-For": "203.0.113.66"})  # fmt: skip
            statuses.append(reply.status_code)
        except requests.RequestException as exc:
            statuses.append(type(exc).__name__)
    kept = arena.app.footprint().temp_bytes - before.temp_bytes
    _abort_upload(arena.app.port, size)
    time.sleep(2.0)
    partial = arena.app.footprint().temp_bytes - before.temp_bytes - kept
    arena.probe("during")
    accepted = sum(1 for s in statuses if s == 200)
    got = (
        f"{accepted} of 3 uploads of {size / 1e6:.0f} MB accepted (statuses {statuses}), {mib(kept)} kept on the server's "
        f"disk; the aborted upload left {mib(max(partial, 0))}"
    )
    return Outcome(got, accepted == 0 and partial <= 2**20,
                   "uploads without a live page session refused; nothing of an aborted one left")  # fmt: skip


def _abort_upload(port: int, size: int) -> None:
    """Start a multipart upload announcing `size` bytes, send a tenth of it, and drop the connection."""
    boundary = "abusebench" + secrets.token_hex(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"aborted.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    request = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Forwarded-For: 203.0.113.66\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(head) + size + 64}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request + head)
        chunk = b"\0" * 2**20
        for _ in range(max(1, size // 10 // len(chunk))):
            sock.sendall(chunk)
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------- 9. session hash
def borrowed_session_hash(arena: Arena) -> Outcome:
    """A request that reuses another visitor's Gradio session hash, without their browser key."""
    canary = "victim-canary-" + secrets.token_hex(8)
    victim = arena.visitor()
    victim.say(f"victim_secret = {canary!r}\nopen('/mnt/data/victim-notes.txt', 'w').write(victim_secret)\n1+1")
    thief = arena.tab(session_hash=victim.session_hash, load=False)
    said = arena.bounded(lambda: thief.say("print(victim_secret)"), 30, "no answer")
    listed = arena.bounded(lambda: thief.act("refresh-btn", "click"), 30, "no listing")
    read = canary in said.answer
    saw = "victim-notes.txt" in thief.file_names()
    arena.probe("during")
    got = (
        ("read the victim's variable" if read else f"its code did not reach the victim's session ({why(said)})")
        + "; "
        + ("listed the victim's files" if saw else f"its listing did not show them ({why(listed) or 'empty'})")
    )
    return Outcome(got, not read and not saw, "the browser key alone decides whose session a request touches")
