"""Browser tests: the real app, in-process on a free loopback port, against the emulator fixture, driven by a
scripted model, in headless Chromium (the system /usr/bin/chromium when present; `playwright install` is never used).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.script import responder
from tests.support.harness import free_port, running_playground
from tests.support.scripted_model import ScriptedModel

SCREENS = {
    "desktop": {"viewport": {"width": 1400, "height": 1000}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
UPLOAD_LIMIT_BYTES = 1024 * 1024  # small, so the over-limit case is cheap; the app's default is 128 MB
SCRIPTED_LABEL = "Scripted test model"

expect.set_options(timeout=20_000)


# ---------------------------------------------------------------------------------------------------------------
# Browser and app fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}, "accept_downloads": True}


@pytest.fixture(params=list(SCREENS))
def screen(request, browser) -> Iterator[Page]:
    """A page in a fresh browser (its own storage, so its own session), at desktop size and at 390×844."""
    context = browser.new_context(**SCREENS[request.param], accept_downloads=True)
    page = context.new_page()
    page.screen_name = request.param  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@dataclass
class Playground:
    url: str
    app: Any  # the PlaygroundApp
    model: ScriptedModel

    @property
    def handlers(self) -> Any:
        return self.app.handlers


@pytest.fixture(scope="session")
def playground(emulator, emulator_token, tmp_path_factory) -> Iterator[Playground]:
    # Gradio's upload/served-file cache goes to a directory of this run, removed afterwards (no leftovers in /tmp)
    cache = tmp_path_factory.mktemp("gradio-cache")
    from playground.settings import Settings

    settings = Settings(server_port=free_port(), max_upload_bytes=UPLOAD_LIMIT_BYTES, execution_timeout=60.0)
    model = ScriptedModel(responder=responder, chunk_delay=0.12)
    try:
        with running_playground(emulator, emulator_token, settings, {SCRIPTED_LABEL: lambda: model}, cache) as (
            url,
            app,
        ):
            yield Playground(url, app, model)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
