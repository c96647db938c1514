"""Browser tests: the real app, in-process on a free loopback port, against the emulator fixture, driven by a
scripted model, in headless Chromium (the system /usr/bin/chromium when present; `playwright install` is never used).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.script import responder
from tests.support.scripted_model import ScriptedModel

SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
UPLOAD_LIMIT_BYTES = 1024 * 1024  # small, so the over-limit case is cheap; the app's default is 128 MB
SCRIPTED_LABEL = "Scripted test model"

expect.set_options(timeout=20_000)


# ---------------------------------------------------------------------------------------------------------------
# Browser and app fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    args = {
        **browser_type_launch_args,
        "headless": True,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }
    if SYSTEM_CHROMIUM.exists():
        args["executable_path"] = str(SYSTEM_CHROMIUM)
    return args


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}, "accept_downloads": True}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Playground:
    url: str
    demo: Any
    model: ScriptedModel

    @property
    def handlers(self) -> Any:
        return self.demo.playground


@pytest.fixture(scope="session")
def playground(emulator, emulator_token, tmp_path_factory) -> Iterator[Playground]:
    # Gradio's upload/served-file cache goes to a directory of this run, removed afterwards (no leftovers in /tmp)
    cache = tmp_path_factory.mktemp("gradio-cache")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    from playground.backend import Backend
    from playground.settings import Settings
    from playground.ui import build_app, launch_kwargs

    settings = Settings(server_port=free_port(), max_upload_bytes=UPLOAD_LIMIT_BYTES, execution_timeout=60.0)
    model = ScriptedModel(responder=responder, chunk_delay=0.12)
    backend = Backend.for_emulator(emulator, emulator_token)
    demo = build_app(settings, backend=backend, extra_models={SCRIPTED_LABEL: lambda: model})
    demo.launch(**launch_kwargs(settings), prevent_thread_lock=True, quiet=True)
    try:
        yield Playground(f"http://127.0.0.1:{settings.server_port}/", demo, model)
    finally:
        demo.close()
        demo.playground.registry.close_all()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(cache, ignore_errors=True)
