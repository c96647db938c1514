"""Live output in the page: what running code prints shows in its block while it runs, in both modes, and Stop keeps
what was printed; a sandbox that cannot stream (an Azure pool) says when the output comes and keeps its timer. Each
at desktop size and at 390×844."""

from __future__ import annotations

import os
import re
import time

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import open_app, select_model, send, thought, wait_idle

pytestmark = pytest.mark.e2e

STOP = "#chat-input button[aria-label='Stop']"
SLOW_LOOP = "import time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.5)"
"""15 s of output, a line every half second."""
SCREENSHOTS = "LIVE_OUTPUT_SCREENSHOTS"  # set to a directory to keep a screenshot of the live text


def test_the_first_line_of_a_slow_loop_shows_before_it_ends_and_stop_keeps_it(
    screen: Page, playground, request
) -> None:
    page = open_app(screen, playground.url)
    select_model(page, "No model: run my message as Python")
    send(page, SLOW_LOOP)
    sent = time.monotonic()
    running = thought(page, "Python · running")
    expect(running).to_contain_text("tick 0", timeout=8_000)
    seen = time.monotonic() - sent
    assert seen < 8.0  # long before the loop's 15 s
    expect(running).to_contain_text("tick 2")  # it keeps coming while the loop runs
    expect(page.locator("#chatbot")).not_to_contain_text("tick 29")
    expect(page.locator(STOP)).to_have_count(1)  # still running
    _keep_screenshot(page, request)
    page.locator(STOP).click()
    expect(page.locator("#chatbot")).to_contain_text("KeyboardInterrupt")
    wait_idle(page)
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text("tick 0")  # Stop keeps what was printed
    expect(chat).to_contain_text("tick 2")
    expect(chat).not_to_contain_text("tick 29")


def test_an_agent_steps_output_shows_while_its_code_runs(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    send(page, "count slowly")  # the scripted model counts to 60, a number a second
    step = thought(page, "Step 1 · running code")
    expect(step).to_contain_text("count 1", timeout=8_000)
    expect(step.locator(".title")).to_have_text(re.compile(r"running code · \d+ s"))  # its clock runs
    page.locator(STOP).click()
    expect(thought(page, "Step 1 · interrupted")).to_be_visible()
    wait_idle(page)
    thought(page, "Step 1 · interrupted").locator(".title").click()
    expect(thought(page, "Step 1 · interrupted")).to_contain_text("count 1")  # kept after Stop
    expect(page.locator("#chatbot")).not_to_contain_text("count 59")


def test_a_sandbox_that_cannot_stream_says_when_the_output_comes(
    screen: Page, playground, emulator, monkeypatch
) -> None:
    monkeypatch.setattr(emulator, "live_output", False)  # the service's answer: no such operation
    page = open_app(screen, playground.url)
    select_model(page, "No model: run my message as Python")
    send(page, "print('warm up')")  # the sandbox learns that it cannot stream
    expect(page.locator("#chatbot")).to_contain_text("warm up")
    wait_idle(page)
    send(page, "import time\nprint('only at', 'the end', flush=True)\ntime.sleep(4)")
    running = thought(page, "Python · running")
    expect(running).to_contain_text("Output arrives when the code ends")
    expect(running.locator(".title")).to_have_text(re.compile(r"· \d+ s"))  # the timer runs
    expect(running).not_to_contain_text("only at the end")  # printed at once, shown at the end
    wait_idle(page)
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("only at the end")


def _keep_screenshot(page: Page, request) -> None:
    directory = os.environ.get(SCREENSHOTS)
    if directory:
        page.screenshot(path=f"{directory}/{request.node.name}.png")
