"""What user code finds open in its worker, in every tier: the protocol's two pipes to the host, the worker's own
pipes (its captured stdout and stderr) and ``/dev/null``, nothing else. The worker's log is a pipe the host drains
into a bounded tail in memory, and the worker closes it before any user code runs: no file of the host is open in a
worker, so a cell cannot grow one (a host-side log file on fd 5 once could be written up to the 1 GiB file limit).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.emulator.conftest import new_id

FIXTURES = {"bubblewrap": ("bubblewrap_emulator", "api"), "landlock": ("landlock_emulator", "landlock_api"),
            "unisolated": ("unisolated", "unisolated_api")}  # fmt: skip

# Every open descriptor as user code sees it: its kind, pipe inode, whether it takes writes (a write of no bytes,
# which changes nothing), and where /proc exists, the list the kernel keeps.
PROBE = """
import os, resource, stat
def kind(mode):
    return next((name for name, test in (("fifo", stat.S_ISFIFO), ("file", stat.S_ISREG), ("socket", stat.S_ISSOCK),
                 ("chr", stat.S_ISCHR), ("dir", stat.S_ISDIR)) if test(mode)), oct(mode))
def writable(fd):
    try:
        os.write(fd, b"")
        return True
    except OSError:
        return False
found = {}
for fd in range(min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    found[fd] = (kind(st.st_mode), st.st_ino, writable(fd))
try:
    listed = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
except OSError:
    listed = None
(found, listed)
"""


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def tier(request) -> SimpleNamespace:
    emulator_fixture, api_fixture = FIXTURES[request.param]
    emulator = request.getfixturevalue(emulator_fixture)
    return SimpleNamespace(name=request.param, emu=emulator, api=request.getfixturevalue(api_fixture))


def _pipes_of_this_process() -> set[int]:
    """The inodes of the pipes this process (the server: the emulator runs in it) holds."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:["):
            inodes.add(int(target[6:-1]))
    return inodes


def _files_below(root: Path) -> dict[str, int]:
    sizes = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            sizes[str(path)] = path.lstat().st_size
    return sizes


def test_user_code_finds_only_the_protocols_pipes_and_its_own(tier):
    identifier = new_id()
    result = tier.api.run(identifier, PROBE)
    assert result["status"] == "Succeeded", result["stderr"]
    found, listed = ast.literal_eval(result["executionResult"])
    if listed is not None:  # the probe's listing opened one more, then closed it
        assert set(found) <= set(listed) and len(set(listed) - set(found)) <= 1, (found, listed)
    host = _pipes_of_this_process()
    protocol = {fd: entry for fd, entry in found.items() if entry[0] == "fifo" and entry[1] in host}
    assert len(protocol) == 2 and sorted(writable for _, _, writable in protocol.values()) == [False, True], found
    captured = {found[1][1], found[2][1]}  # fds 1 and 2: the worker's own pipes, drained per cell
    others = {fd: entry for fd, entry in found.items() if fd not in protocol}
    assert others[0][0] == "chr" and not others[0][2], found  # /dev/null, read-only
    assert all(kind == "fifo" and inode in captured for fd, (kind, inode, _) in others.items() if fd), found
    assert not any(kind in ("file", "socket", "dir") for kind, _, _ in found.values()), found


def test_a_cell_cannot_write_to_any_descriptor_but_its_own_output(tier):
    """Past the protocol's pipes and its captured output, every descriptor refuses a write: 1 MiB is tried on each,
    and no file of the emulator's grows."""
    identifier = new_id()
    first = tier.api.run(identifier, "print('ready')")
    assert first["stdout"] == "ready\n"
    root = Path(tier.emu.data_root)
    own = (str(tier.emu.session(identifier).data_dir), str(tier.emu.session(identifier).scratch_dir))
    before = {path: size for path, size in _files_below(root).items() if not path.startswith(own)}
    found, _ = ast.literal_eval(tier.api.run(identifier, PROBE)["executionResult"])
    protocol = {fd for fd, (kind, inode, _) in found.items() if kind == "fifo" and inode in _pipes_of_this_process()}
    captured = {found[1][1], found[2][1]}
    targets = sorted(fd for fd, (_, inode, _) in found.items() if fd not in protocol and inode not in captured)
    code = (
        "import os\n"
        "outcome = {}\n"
        f"for fd in {targets!r}:\n"
        "    try:\n"
        "        outcome[fd] = os.write(fd, b'x' * (1 << 20))\n"
        "    except OSError as exc:\n"
        "        outcome[fd] = type(exc).__name__\n"
        "outcome"
    )
    outcome = ast.literal_eval(tier.api.run(identifier, code)["executionResult"])
    assert all(isinstance(value, str) for value in outcome.values()), outcome  # every write refused
    after = {path: size for path, size in _files_below(root).items() if not path.startswith(own)}
    grown = {path: (before.get(path), size) for path, size in after.items() if size > before.get(path, 0)}
    assert not grown, grown
    assert not [path for path in after if path.endswith(".log") and "template" not in path], after  # no worker log


def test_a_workers_failed_set_up_is_told_from_its_log_pipe(tmp_path):
    """The log pipe carries what a worker writes while it sets itself up: a failure there reaches the error the host
    raises (``WorkerProcess.log_tail``), kept in memory."""
    from azure_sessions.emulator.launcher import Launcher
    from azure_sessions.emulator.tiers import UnisolatedTier
    from azure_sessions.emulator.workers import WorkerLost, WorkerPool

    launcher = Launcher(UnisolatedTier("a test"), tmp_path)
    original = launcher.tier.new_session

    def broken(*args, **kwargs):  # a working directory that does not exist: the set-up's last step fails
        plan = original(*args, **kwargs)
        return type(plan)(config=_with_data_dir(plan.config, "/nonexistent/data"), env=plan.env,
                          scratch_dir=plan.scratch_dir)  # fmt: skip

    launcher.tier.new_session = broken  # type: ignore[method-assign]
    pool = WorkerPool(launcher, size=0)
    try:
        with pytest.raises(WorkerLost) as failure:
            pool.acquire()
        assert "worker setup failed" in str(failure.value) and "/nonexistent/data" in str(failure.value), failure.value
        assert [path.name for path in (tmp_path / "logs").iterdir()] == ["template.log"]  # no log file per worker
    finally:
        pool.close()


def _with_data_dir(config, data_dir: str):
    import dataclasses

    return dataclasses.replace(config, data_dir=data_dir)


def test_a_ready_workers_internal_warnings_reach_the_host_as_messages(tmp_path):
    """Once ready, a worker has no log pipe: its internal warnings (say, ending a timed-out cell's processes failed)
    travel on the protocol's reply pipe as ``Log`` messages, into the same tail."""
    from azure_sessions.emulator.launcher import Launcher
    from azure_sessions.emulator.tiers import UnisolatedTier
    from azure_sessions.emulator.workers import WorkerPool

    pool = WorkerPool(Launcher(UnisolatedTier("a test"), tmp_path), size=0)
    worker = pool.acquire()
    try:
        code = (
            "import gc\n"
            "gc.unfreeze()\n"  # the template froze its objects, the kernel among them
            "kernel = next(o for o in gc.get_objects() if type(o).__name__ == 'Kernel')\n"
            "kernel.log('an internal warning')\n"
            "print(kernel.log_fd)"
        )
        result = worker.execute(code, timeout=30)
        assert result.ok and result.stdout == "None\n", result  # its log pipe is closed
        assert worker.log_tail().endswith("an internal warning"), worker.log_tail()
    finally:
        worker.cleanup()
        pool.close()
