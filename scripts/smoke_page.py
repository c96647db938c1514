"""Loads a running playground in headless Chromium and runs one cell in its sandbox ("No model" mode): the check
behind scripts/docker-smoke.sh. The cell prints, reads its environment and draws a plot.

Usage: .venv/bin/python scripts/smoke_page.py URL [--tier bubblewrap|Landlock|"Azure pool"]

Exit status 0: the cell ran (and, with --tier, in that sandbox); 1: the page refuses to run code (its reason is
printed), runs it elsewhere than --tier asks, or the cell did not answer; 2: the page was not served.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import requests
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.pages import select_model, send
from tests.support.harness import chromium_launch_options, wait_until

NO_MODEL = "No model: run my message as Python"
CELL = (
    "import os, sys\nimport matplotlib.pyplot as plt\n"
    "plt.plot([1, 4, 9])\nplt.title('smoke')\n"
    "print(6 * 7, sys.prefix, 'secrets in the sandbox:', [k for k in os.environ if 'TOKEN' in k or 'SECRET' in k])\n"
    "plt.show()"
)
SERVE_TIMEOUT = 120
CELL_TIMEOUT_MS = 120_000
ANSWERED = re.compile(r"Python · \d+\.\d+ s")  # how a "No model" answer ends


class SmokeFailure(Exception):
    """The smoke test failed; the message says what the page showed and what to do."""


def serving(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def refusal(page: Page) -> str | None:
    """The page's reason for running no code, once the page has drawn its backend badge; None if it runs code."""
    badge = page.locator("#backend-badge")
    expect(badge).to_be_visible(timeout=30_000)
    print(f"smoke: the page says {badge.inner_text()!r}")
    if "code is not run" not in badge.inner_text():
        return None
    return page.locator("#isolation-warning").inner_text().strip()


def run_cell(page: Page) -> float:
    """Send the cell in "No model" mode; return its round trip (sent to answer shown) in seconds. The running block
    is replaced by the answer (a plain message ending in "Python · N s"), so the answer is what is waited for."""
    expect(page.locator('#session-panel [data-key="Session"] code')).to_be_visible(timeout=30_000)
    select_model(page, NO_MODEL)
    chat = page.locator("#chatbot")
    started = time.monotonic()
    send(page, CELL)
    answer = chat.locator("[data-testid='bot']").filter(has_text=ANSWERED).last
    expect(answer).to_be_visible(timeout=CELL_TIMEOUT_MS)
    expect(answer).to_contain_text("42 ")
    expect(chat.locator("img").first).to_be_visible(timeout=CELL_TIMEOUT_MS)
    seconds = time.monotonic() - started
    line = next((text for text in answer.inner_text().splitlines() if text.startswith("42 ")), "")
    print(f"smoke: the cell printed {line!r} and drew its plot")
    if "secrets in the sandbox: []" not in line:
        raise SmokeFailure("the sandboxed cell saw secrets in its environment: the sandbox does not hold")
    return seconds


def smoke(url: str, tier: str | None) -> None:
    served = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch_options())
        try:
            page = browser.new_page()
            page.goto(url)
            reason = refusal(page)
            if reason is not None:
                raise SmokeFailure(
                    f"the page runs no code and says: {reason}\n"
                    "What to do: run the container where the Landlock system calls are allowed (Docker's default "
                    "seccomp profile allows them; a custom profile or an old runtime may not) on Linux 6.2 or newer, "
                    "or configure an Azure dynamic-sessions pool (AZURE_SESSIONS_POOL_ENDPOINT), as the page says."
                )
            badge = page.locator("#backend-badge").inner_text()
            if tier and tier.lower() not in badge.lower():
                raise SmokeFailure(
                    f"the page runs code in {badge!r}, not in the {tier} tier asked for: the container does not have "
                    "the conditions expected (for Landlock: uid 1000 without user namespaces, as Docker's default "
                    "seccomp profile makes it)"
                )
            loaded = time.monotonic() - served
            seconds = run_cell(page)
            print(f"smoke: page loaded in {loaded:.1f} s; the cell's round trip through the page: {seconds:.1f} s")
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--tier", help="the sandbox the page must say it uses (e.g. Landlock)")
    args = parser.parse_args(argv)
    try:
        wait_until(lambda: serving(args.url), timeout=SERVE_TIMEOUT, interval=0.5, what=f"{args.url} serves the page")
    except (AssertionError, TimeoutError):
        print(f"smoke: {args.url} did not serve its page within {SERVE_TIMEOUT} s: see the app's log", file=sys.stderr)
        return 2
    try:
        smoke(args.url, args.tier)
    except SmokeFailure as failure:
        print(f"smoke: FAILED: {failure}", file=sys.stderr)
        return 1
    except (AssertionError, PlaywrightError) as exc:  # an expectation that timed out: what the page did not show
        print(f"smoke: FAILED: the page did not show what was expected: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print("smoke: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
