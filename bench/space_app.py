"""The app as a Hugging Face Space runs it, in its own process, and what it costs the machine.

`Stage` copies the checkout once to a directory the app's user can read (as scripts/space-stage.sh does). Each
`SpaceApp` then starts `python app.py` there with a Space's environment (`SPACE_ID`, canary secrets, bound to
127.0.0.1 on a free port, its temp files in a directory of its own), in one of two conditions:

- "space": as uid 1000 (or `BENCH_SPACE_UID`) with no way to create a user namespace, so the embedded emulator
  takes the Landlock tier by itself: `setpriv --reuid U ... bwrap --unshare-user --disable-userns --dev-bind / /
  --tmpfs /tmp -- python app.py`. Needs root; otherwise the current user runs it as is, and `note` says so.
- "root": as root with user namespaces, so the emulator takes the bubblewrap tier (a private tmpfs /tmp per sandbox).

`footprint()` measures the app's process (RSS), the sandbox template and the workers forked from it (RSS, PSS, count),
the app's temp files (its per-visitor directories, Gradio's cache, the sandboxes' /mnt/data and scratch: allocated
bytes and entries), SysV shared memory of the app's user and the host's shared memory. `close()` ends the app and every
process it left behind: this process is a child subreaper, so orphans of the app's tree are re-parented here and
nothing outlives the benchmark (only processes started here are signalled, by pid).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from azure_sessions.emulator.inside.strays import descendants, process_table, read_stat
from bench.common import ROOT
from bench.server import smaps_kb
from tests.support.harness import free_port

SPACE_UID = int(os.environ.get("BENCH_SPACE_UID", "1000"))
CANARIES = {
    "HF_TOKEN": "hf_AbuseBenchCanary00000000000000000",
    "AZURE_CLIENT_SECRET": "abuse-bench-canary-client-secret",
    "OPENAI_API_KEY": "sk-abuse-bench-canary",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-0000000ab05e",
}
START_TIMEOUT = 150.0
_PR_SET_CHILD_SUBREAPER = 36


def is_root() -> bool:
    return os.geteuid() == 0


def become_subreaper() -> bool:
    """Orphans of our descendants are re-parented to this process (so an app's strays stay findable)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_orphans(keep: frozenset[int] = frozenset()) -> None:
    """Collect the exit status of every ended child of this process (adopted orphans included) but `keep`'s, whose
    owners (a `Popen`) collect their own: a zombie still counts against its user's process limit."""
    me = os.getpid()
    for pid, stat in process_table().items():
        if stat.ppid == me and stat.ended and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class Stage:
    """A copy of the checkout the app's user can read, and a directory per app start. Remove with `close()`.

    As root, the app's user is uid 1000 (`BENCH_SPACE_UID`) with user namespaces taken away, as in
    scripts/space-stage.sh; the app runs this interpreter's environment when that user can read it, else one built
    in the copy by scripts/setup.sh. `problem` says why those conditions could not be made (None: they were).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="abuse-stage.", dir="/var/tmp"))
        self.root.chmod(0o755)
        self.app = self.root / "app"
        self.app.mkdir()
        ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "results", ".pytest_cache", ".ruff_cache")
        shutil.copytree(ROOT, self.app, ignore=ignore, dirs_exist_ok=True)
        self.uid = SPACE_UID if is_root() else os.getuid()
        self.python = os.path.abspath(sys.executable)  # as invoked: a venv's python is a link to the base one
        self.built_venv = False
        if is_root():
            _chown_tree(self.root, self.uid)
        self.runs = 0
        self.prefix: list[str] = []
        self.problem = self._make_space_conditions() if is_root() else None

    def _make_space_conditions(self) -> str | None:
        wrap = ["setpriv", "--reuid", str(self.uid), "--regid", str(self.uid), "--clear-groups"]
        jail = ["bwrap", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/", "--tmpfs", "/tmp", "--"]
        if _runs([*wrap, *jail, "true"]):
            self.prefix = [*wrap, *jail]
        elif not _runs([*wrap, "unshare", "-U", "true"]):
            self.prefix = wrap  # no user namespaces here at all (a container): the conditions hold already
        else:
            return "cannot take away user namespaces on this host (bubblewrap >= 0.8 is needed)"
        if not _runs([*self.prefix, self.python, "-c", "import gradio, playground"], cwd=self.app):
            self.python = str(self.app / ".venv" / "bin" / "python")
            self.built_venv = True
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.root), "LANG": "C.UTF-8"}
            built = _runs([*self.prefix, "bash", "scripts/setup.sh", "app"], cwd=self.app, env=env, timeout=900)
            if not built or not _runs([*self.prefix, self.python, "-c", "import gradio, playground"], cwd=self.app):
                return f"uid {self.uid} can neither run this interpreter nor build an environment in the stage"
        return None

    def new_run(self) -> Path:
        self.runs += 1
        run = self.root / f"run-{self.runs}"
        for path in (run, run / "tmp", run / "home"):
            path.mkdir()
            if is_root():
                os.chown(path, self.uid, self.uid)
        return run

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _runs(command: list[str], timeout: float = 120, cwd: Path | None = None, env: dict | None = None) -> bool:
    """The command runs and exits 0."""
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, cwd=cwd, env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _chown_tree(root: Path, uid: int) -> None:
    for base, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(base, name), uid, uid)
    os.chown(root, uid, uid)


@dataclass
class Footprint:
    """What the app costs at one moment. Sizes in bytes."""

    app_rss: int = 0
    template_rss: int = 0
    workers_pss: int = 0  # their proportional share: what they add to the machine
    workers: int = 0  # processes under the template (workers and whatever they started)
    strays: int = 0  # processes of the app's tree outside the template (re-parented here or to the app)
    temp_bytes: int = 0  # the app's per-visitor directories and Gradio's cache, allocated
    temp_entries: int = 0
    cache_entries: int = 0  # of which in Gradio's cache
    sandbox_bytes: int = 0  # the sandboxes' /mnt/data, scratch and logs, allocated
    sysv_shm_bytes: int = 0  # SysV shared memory segments of the app's user
    host_shmem: int = 0  # the host's shared memory (tmpfs pages included), from /proc/meminfo
    host_available: int = 0


@dataclass
class SpaceApp:
    """`python app.py` from the stage, as a Space runs it ("space") or as root with bubblewrap ("root")."""

    stage: Stage
    condition: str = "space"
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run = self.stage.new_run()
        self.tmp = self.run / "tmp"
        self.log_path = self.run / "app.log"
        self.note = ""
        self.seen: dict[int, int] = {}  # every pid seen in the app's tree -> its start time
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.run / "home"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.tmp),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "localhost,127.0.0.1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "SPACE_ID": "sessions-playground/abuse-bench",
            "GRADIO_SERVER_NAME": "127.0.0.1",
            **CANARIES,
            **self.extra_env,
        }
        command = [self.stage.python, "app.py"]
        if self.condition == "space" and is_root() and self.stage.problem is None:
            command = [*self.stage.prefix, *command]
            self.uid = self.stage.uid
        else:
            self.uid = os.getuid()
            if self.condition == "space":
                self.note = (
                    f"not root: the app ran as this user (uid {self.uid}), not as uid {SPACE_UID} without user "
                    "namespaces, so its sandbox tier is whatever this user gets"
                    if not is_root()
                    else f"the Space's conditions could not be made ({self.stage.problem}); the app ran as root"
                )
        for _ in range(3):  # a port another program took between free_port() and the app's bind: try another
            self.url = f"http://127.0.0.1:{self.port}/"
            env["GRADIO_SERVER_PORT"] = str(self.port)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(command, cwd=self.stage.app, env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            self.started = time.monotonic()
            self.pid = self.proc.pid
            try:
                self._wait_ready()
                self.pid = self._find_app_pid()
                if _listens(self.pid, self.port):
                    self.tier = self._tier()
                    return
            except BaseException:
                self.close()
                raise
            self.close()
            self.seen.clear()
            self.port = free_port()
        raise RuntimeError("the app could not keep a port of its own (another program answered on it)")

    # -- start -------------------------------------------------------------------------------------------------------
    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited while starting (code {self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "config", timeout=5).ok:
                    self.ready_seconds = time.monotonic() - self.started
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the app did not answer within {START_TIMEOUT:.0f} s: {self.log_tail()}")

    def _find_app_pid(self) -> int:
        table = process_table()
        for pid in sorted({self.proc.pid} | descendants(self.proc.pid, table)):
            if _cmdline(pid) == [self.stage.python, "app.py"]:
                return pid
        raise RuntimeError("the app's process was not found")

    def _tier(self) -> str:
        """The sandbox tier the app's page announces (its badge), e.g. "Local sandbox · Landlock"."""
        for component in self.config().get("components", []):
            value = str(component.get("props", {}).get("value") or "")
            if 'id="backend-badge"' in value:
                return value.split('id="backend-badge">', 1)[1].split("<", 1)[0]
        return "unknown"

    def config(self) -> dict:
        return requests.get(self.url + "config", timeout=30).json()

    def last_error(self) -> str:
        """The app log's last line that names an error (why it ended), if any."""
        lines = [line for line in self.log_tail(20_000).splitlines() if "Error" in line or "Killed" in line]
        return lines[-1].strip()[:200] if lines else ""

    def log_tail(self, limit: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-limit:]
        return ""

    # -- state -------------------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """The server answers (its process lives and /config replies)."""
        if not self.running():
            return False
        try:
            return requests.get(self.url + "config", timeout=10).ok
        except requests.RequestException:
            return False

    def running(self) -> bool:
        """The app's process has not ended (it may still not answer)."""
        stat = read_stat(self.pid)
        return stat is not None and not stat.ended

    def down_reason(self) -> str:
        try:
            requests.get(self.url + "config", timeout=10)
        except requests.ConnectionError:
            return "server down: connection refused"
        except requests.Timeout:
            return "server down: no answer within 10 s"
        except requests.RequestException as exc:
            return f"server down: {type(exc).__name__}"
        return "server up"

    def tree(self) -> tuple[set[int], int | None]:
        """Every live process of the app's tree (strays re-parented here included), and the sandbox template's pid:
        the app's descendant running the sandbox's entry point whose parent does not (its workers are forks of it)."""
        table = process_table()
        mine = descendants(os.getpid(), table)
        for pid in mine:
            self.seen.setdefault(pid, table[pid].start)
        template = None
        for pid in sorted(descendants(self.pid, table) if self.pid in table else ()):
            if _runs_worker(pid) and not _runs_worker(table[pid].ppid):
                template = pid
                break
        return {pid for pid in mine if not table[pid].ended}, template

    def template_pid(self) -> int | None:
        return self.tree()[1]

    def footprint(self) -> Footprint:
        reap_orphans(keep=frozenset({self.proc.pid}))
        table = process_table()
        live, template = self.tree()
        under_template = descendants(template, table) if template else set()
        fp = Footprint(app_rss=_rss(self.pid), template_rss=_rss(template) if template else 0)
        for pid in under_template & live:
            with contextlib.suppress(OSError, KeyError):
                memory = smaps_kb(pid)
                fp.workers_pss += memory["pss"] * 1024
            fp.workers += 1
        others = live - under_template - {self.pid, template, self.proc.pid}
        fp.strays = sum(1 for pid in others if not _is_wrapper(pid))
        fp.temp_bytes, fp.temp_entries, fp.cache_entries, fp.sandbox_bytes = _temp_usage(self.tmp)
        fp.sysv_shm_bytes = sum(size for _, uid, size in sysv_segments() if uid == self.uid)
        meminfo = _meminfo()
        fp.host_shmem, fp.host_available = meminfo.get("Shmem", 0), meminfo.get("MemAvailable", 0)
        return fp

    # -- end ---------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """End the app and every process of its tree (SIGKILL: its own shutdown is not what is measured)."""
        for _ in range(50):
            left = self._left_over()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            reap_orphans(keep=frozenset({self.proc.pid}))
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(ChildProcessError):
            self.proc.wait()
        if keep := os.environ.get("BENCH_APP_LOGS"):  # a directory to keep each app's log in, to read after the run
            with contextlib.suppress(OSError):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.log_path, Path(keep) / f"app-{self.port}-{int(time.time())}.log")

    def _left_over(self) -> list[int]:
        """Processes seen in the app's tree that still run (checked by start time, so a reused pid is spared)."""
        self.tree()
        left = []
        for pid, start in self.seen.items():
            stat = read_stat(pid)
            if stat is not None and stat.start == start and not stat.ended:
                left.append(pid)
        return left


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def _listens(pid: int, port: int) -> bool:
    """Process `pid` holds the socket listening on 127.0.0.1:`port` (so the server that answers is the app)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _runs_worker(pid: int) -> bool:
    """Whether ``pid`` runs the sandbox's entry point (the template and, forked from it, every worker)."""
    return any(part.endswith("/inside/main.py") for part in _cmdline(pid))


def _is_wrapper(pid: int) -> bool:
    name = os.path.basename((_cmdline(pid) or [""])[0])
    return name in ("setpriv", "bwrap")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


def sysv_segments() -> list[tuple[int, int, int]]:
    """(shmid, owner uid, size in bytes) of every SysV shared memory segment of this IPC namespace."""
    segments = []
    with contextlib.suppress(OSError):
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(header, line.split(), strict=False))
            segments.append((int(row["shmid"]), int(row["uid"]), int(row["size"])))
    return segments


def remove_segments(uid: int, keep: set[int]) -> int:
    """Remove the SysV segments of `uid` not in `keep` (what an attack left behind); returns how many."""
    libc = ctypes.CDLL(None, use_errno=True)
    removed = 0
    for shmid, owner, _ in sysv_segments():
        if owner == uid and shmid not in keep and libc.shmctl(shmid, 0, None) == 0:  # IPC_RMID
            removed += 1
    return removed


def _temp_usage(tmp: Path) -> tuple[int, int, int, int]:
    """(allocated bytes and entries of the app's own temp files, entries in Gradio's cache, allocated bytes of the
    sandboxes' directories) under the app's TMPDIR."""
    own = entries = cache = sandboxes = 0
    try:
        tops = list(os.scandir(tmp))
    except OSError:
        return 0, 0, 0, 0
    for top in tops:
        size, count = _du(top.path)
        if top.name.startswith("azure-sessions-emulator-"):
            sandboxes += size
            continue
        own, entries = own + size, entries + count
        if top.name == "gradio":
            cache += count
    return own, entries, cache, sandboxes


def _du(path: str) -> tuple[int, int]:
    """Allocated bytes and number of entries under `path` (symlinks not followed)."""
    total = count = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            info = os.lstat(current)
        except OSError:
            continue
        total += info.st_blocks * 512
        count += 1
        if os.path.isdir(current) and not os.path.islink(current):
            with contextlib.suppress(OSError):
                stack.extend(entry.path for entry in os.scandir(current))
    return total, count - 1
