"""Phone-sized screens: at 390×844 the chat box is on the first screen and usable, and the side panel (model,
session, files) folds below the chat; at desktop size it sits beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import final_answer, open_app, send, wait_idle

pytestmark = pytest.mark.e2e

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def in_view(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def test_the_chat_box_is_on_the_first_screen_and_the_files_fold_below_on_a_phone(
    screen: Page, playground, tmp_path: Path
) -> None:
    page = open_app(screen, playground.url)
    width = page.viewport_size["width"]
    assert page.evaluate("window.scrollY") == 0
    assert in_view(page, "#chat-input textarea") and in_view(page, "#chat-input button[aria-label='Submit']")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
    send(page, "hello from a small screen")
    expect(final_answer(page, "ECHO: hello from a small screen")).to_be_in_viewport()
    wait_idle(page)
    assert in_view(page, "#chat-input textarea")
    chat = page.locator("#chatbot").bounding_box()
    files = page.locator("#file-list").bounding_box()
    assert chat is not None and files is not None
    if screen.screen_name == "phone":
        assert files["y"] >= chat["y"] + chat["height"]  # folded below the chat
        target = ASSETS / "screenshot-phone.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "phone.png"
        page.screenshot(path=str(target))
    else:
        assert files["x"] >= chat["x"] + chat["width"]  # beside it
