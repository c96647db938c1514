"""`python app.py` in a child process, as a deployer starts it: its own environment, a free loopback port, its log in
a file; optionally on a host where no isolation tier works (tests/support/locked_down.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.harness import free_port, wait_until
from tests.support.locked_down import without_isolation_tiers

CHECKOUT = Path(__file__).resolve().parents[2]
KEPT = ("PATH", "HOME", "LANG", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "NO_PROXY", "TMPDIR")


def child_env(**extra: str) -> dict[str, str]:
    """The few variables of this process that a child needs, unbuffered output, and ``extra``."""
    return {**{k: os.environ[k] for k in KEPT if k in os.environ}, "PYTHONUNBUFFERED": "1", **extra}


def serving(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def app_process(log_dir: Path, *, locked_down: bool = False, **env: str) -> Iterator[str]:
    """Start app.py with ``env`` on a free loopback port (Gradio's files in ``log_dir``), wait until it serves its
    page and yield the page's URL; stop it on exit. Its output goes to ``log_dir / "app.log"``. ``locked_down``:
    neither bubblewrap nor Landlock works for it (a container's seccomp filter and a kernel without Landlock)."""
    port = free_port()
    log = log_dir / "app.log"
    env = child_env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
                    GRADIO_TEMP_DIR=str(log_dir / "gradio"), **env)  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=CHECKOUT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=without_isolation_tiers() if locked_down else None)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: proc.poll() is not None or serving(url), timeout=90, what="the app serves its page")
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
