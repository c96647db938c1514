"""Loads a running playground in headless Chromium and runs one cell in its sandbox ("No model" mode): the check
behind scripts/docker-smoke.sh. Usage: .venv/bin/python scripts/smoke_page.py URL"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.pages import open_app, select_model, send
from tests.support.harness import chromium_launch_options, wait_until

NO_MODEL = "No model: run my message as Python"


def main(url: str) -> int:
    def serving() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(serving, timeout=120, interval=0.5, what=f"{url} serves the page")
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch_options())
        page = open_app(browser.new_page(), url)
        badge = page.locator("#backend-badge").inner_text()
        print(f"smoke: the page says {badge!r}")
        if "code is not run" in badge:
            print("smoke: " + page.locator("#isolation-warning").inner_text(), file=sys.stderr)
            return 1
        select_model(page, NO_MODEL)
        send(page, "import sys, matplotlib\nprint(6 * 7, sys.prefix)")
        chat = page.locator("#chatbot")
        block = chat.locator(".thought-group").filter(has=page.locator(".title", has_text="Python")).last
        expect(block).to_be_visible(timeout=120_000)
        if "42" not in chat.inner_text():  # the cell's block may be folded
            block.locator(".title").click()
        expect(chat).to_contain_text("42")
        print(f"smoke: one cell ran in the sandbox, {time.monotonic() - started:.1f} s after the page served")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
