"""A session's ``/tmp`` (and ``/dev/shm`` under bubblewrap) in each isolating tier: directories on disk in the
session's scratch directory, made by the host, counted by the disk budget's measure, removed with the session;
nothing a session writes there pins memory. ``multiprocessing`` keeps working under bubblewrap (its semaphores and
shared memory live in ``/dev/shm``)."""

from __future__ import annotations

import ast

from azure_sessions.emulator.watchdog import allocated_bytes
from tests.emulator.conftest import new_id
from tests.support.harness import wait_until

MIB = 1024 * 1024


def test_tmp_is_on_disk_in_the_sessions_scratch_directory_and_counts_in_its_disk(tier):
    identifier = new_id()
    shm = tier.name == "bubblewrap"  # the Landlock tier has no /dev/shm (no multiprocessing either: README)
    code = (
        "import os\n"
        "with open('/tmp/scratch.bin', 'wb') as fh:\n"
        "    fh.write(os.urandom(8 << 20))\n"
        + (
            "from multiprocessing import shared_memory\n"
            "block = shared_memory.SharedMemory(name='scratch-shm', create=True, size=2 << 20)\n"
            "block.buf[:] = os.urandom(2 << 20)\n"
            if shm
            else ""
        )
        + "sorted(os.listdir('/tmp'))"
    )
    result = tier.api.run(identifier, code)
    assert result["status"] == "Succeeded", result["stderr"]
    assert "scratch.bin" in ast.literal_eval(result["executionResult"])
    session = tier.emu.session(identifier)
    scratch = session.scratch_dir
    assert scratch is not None and scratch.is_dir(), session  # every tier: the host made it
    written = scratch / "tmp" / "scratch.bin"
    assert written.stat().st_size == 8 * MIB
    if shm:
        assert (scratch / "shm" / "scratch-shm").stat().st_size == 2 * MIB
    # what the disk budget counts (watchdog.allocated_bytes over the session's directories) holds it all
    assert allocated_bytes([str(session.data_dir), str(scratch)]) >= (10 if shm else 8) * MIB
    tier.api.request("DELETE", "session", identifier, "2025-02-02-preview")
    wait_until(lambda: not scratch.exists(), timeout=20, what="the scratch directory removed with its session")


def test_multiprocessing_works_under_bubblewrap(bubblewrap_emulator, api):
    """Its locks and queues are POSIX semaphores in /dev/shm, now a directory of the session's scratch directory."""
    code = (
        "import concurrent.futures, multiprocessing, os\n"
        "with concurrent.futures.ProcessPoolExecutor(2) as pool:\n"
        "    squares = list(pool.map(pow, [1, 2, 3], [2, 2, 2]))\n"
        "with multiprocessing.Pool(2) as pool:\n"
        "    negated = pool.map(abs, [-1, -2])\n"
        "lock = multiprocessing.Lock()\n"
        "with lock:\n"
        "    pass\n"
        "queue = multiprocessing.Queue(); queue.put('through a queue')\n"
        "(squares, negated, queue.get(timeout=10))"
    )
    result = api.run(new_id(), code, timeout=120)
    assert result["status"] == "Succeeded", result["stderr"]
    assert ast.literal_eval(result["executionResult"]) == ([1, 4, 9], [1, 2], "through a queue")


def test_bubblewrap_mounts_no_tmpfs_a_session_can_fill(bubblewrap_emulator, api):
    """Of the worker's mounts, only tiny read-only masks (and bubblewrap's /dev, which the worker cannot write) are
    memory-backed; /tmp and /dev/shm are bound from the disk."""
    code = (
        "mounts = {}\n"
        "for line in open('/proc/self/mountinfo'):\n"
        "    fields = line.split()\n"
        "    mounts[fields[4]] = (fields[fields.index('-') + 1], fields[5].split(',')[0])\n"
        "import os\n"
        "(mounts, os.access('/dev', os.W_OK))"
    )
    result = api.run(new_id(), code)
    mounts, dev_writable = ast.literal_eval(result["executionResult"])
    assert mounts["/tmp"][0] != "tmpfs" and mounts["/dev/shm"][0] != "tmpfs", mounts
    writable_tmpfs = {point for point, (kind, mode) in mounts.items() if kind == "tmpfs" and mode == "rw"}
    assert writable_tmpfs <= {"/dev", "/mnt"}, writable_tmpfs  # /mnt: 1 MiB, read-only for the session's uid
    assert not dev_writable
