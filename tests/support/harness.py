"""Test and benchmark plumbing shared by the suites: free ports, waiting on conditions, the browser flags, and
the real app launched in-process against an emulator."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Headless Chromium as root on a machine with no outside network (no background connections, no sandbox)."""


def chromium_launch_options() -> dict[str, Any]:
    """Playwright's launch options for every browser of the suites, benchmarks and scripts: headless, with
    CHROMIUM_ARGS, the system Chromium when there is one (`playwright install` is never run)."""
    options: dict[str, Any] = {"headless": True, "args": CHROMIUM_ARGS}
    if SYSTEM_CHROMIUM.exists():
        options["executable_path"] = str(SYSTEM_CHROMIUM)
    return options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (for states with no event to wait on); fail after
    ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s" + (f": {what}" if what else ""))
        time.sleep(interval)


@contextmanager
def running_playground(emu: Any, token: str, settings: Any, models: dict, cache: Path) -> Iterator[tuple[str, Any]]:
    """Build and launch the app (``settings``, with its ``server_port``) against the emulator ``emu``, offering
    ``models`` (label -> factory); yields ``(url, app)``, the app a ``PlaygroundApp``. Gradio's file cache goes to
    ``cache``. On exit every visitor's session is closed (its sandbox deleted) and the server stops."""
    from playground.backend import Backend
    from playground.ui import build_app

    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    app = build_app(settings, backend=Backend.for_emulator(emu, token), extra_models=models)
    app.launch(prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{settings.server_port}/", app
    finally:
        app.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
