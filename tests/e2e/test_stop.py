"""Stop really stops: the local sandbox interrupts the running code and keeps the session; a sandbox that cannot
interrupt (an Azure pool) says so, keeps a running timer and offers Reset sandbox; the next message never waits
silently. Each at desktop size and at 390×844."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import final_answer, open_app, select_model, send, session_id, session_of, thought, wait_idle
from tests.support.harness import wait_until

pytestmark = pytest.mark.e2e

STOP = "#chat-input button[aria-label='Stop']"


def test_stop_interrupts_the_running_code_and_the_session_survives(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    send(page, "count slowly")
    step = thought(page, "Step 1 · running code")
    expect(step).to_be_visible()
    session = session_of(playground, page)
    run = session.runs()[-1]
    page.locator(STOP).click()
    expect(page.locator(STOP)).to_have_count(0)
    expect(page.locator("#chatbot")).to_contain_text("The running code was interrupted")
    expect(thought(page, "Step 1 · interrupted")).to_be_visible()
    wait_until(lambda: not run.thread.is_alive(), timeout=10, what="the run's thread ended")
    wait_idle(page)
    thought(page, "Step 1 · interrupted").locator(".title").click()
    expect(thought(page, "Step 1 · interrupted")).to_contain_text("KeyboardInterrupt")
    expect(page.locator("#chatbot")).not_to_contain_text("count 30")  # stopped long before its end
    # the sandbox session survived the interrupt (its variable is there) and the next message does not wait
    send(page, "recall the survivor")
    expect(final_answer(page, "survivor is still here")).to_be_visible()
    expect(page.locator("#chatbot")).not_to_contain_text("Waiting")
    expect(page.locator("#reset-sandbox")).to_have_count(0)


def test_stop_interrupts_a_python_message(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    select_model(page, "No model: run my message as Python")
    send(page, "kept = 7\nimport time\nfor i in range(60):\n    print(i)\n    time.sleep(1)")
    expect(thought(page, "Python · running")).to_be_visible()
    page.locator(STOP).click()
    expect(page.locator("#chatbot")).to_contain_text("KeyboardInterrupt")
    expect(page.locator("#chatbot")).to_contain_text("The running code was interrupted")
    wait_idle(page)
    send(page, "kept * 6")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("42")


def test_a_sandbox_that_cannot_interrupt_says_so_times_it_and_offers_a_reset(
    screen: Page, playground, emulator, monkeypatch
) -> None:
    monkeypatch.setattr(emulator, "interruptible", False)  # the service's answer: no such operation
    page = open_app(screen, playground.url)
    before = session_id(page)
    send(page, "count slowly")
    expect(thought(page, "Step 1 · running code")).to_be_visible()
    page.locator(STOP).click()
    expect(page.locator(STOP)).to_have_count(0)  # the page is free at once
    stopping = thought(page, "Stopping")
    expect(stopping).to_contain_text("cannot interrupt code that is running")
    expect(stopping).to_contain_text("variables and the files in /mnt/data are lost")
    reset = page.locator("#reset-sandbox")
    expect(reset).to_be_in_viewport(ratio=1)  # on a phone too, with the chat box
    first = _seconds(stopping.locator(".title").inner_text())
    expect(stopping.locator(".title")).not_to_have_text(re.compile(rf"Stopping · {first} s"))  # the timer runs
    # the next message says what it waits for, with a clock, and how to end the wait
    send(page, "hello again")
    expect(reset).to_be_in_viewport(ratio=1)
    expect(page.locator("#chat-input textarea")).to_be_in_viewport(ratio=1)
    waiting = thought(page, "Waiting")
    expect(waiting).to_contain_text("still running in the sandbox")
    expect(waiting).to_contain_text("Reset sandbox")
    reset.click()
    expect(page.locator("#chatbot")).to_contain_text("Reset sandbox ended the running code")
    expect(final_answer(page, "ECHO: hello again")).to_be_visible()
    wait_idle(page)
    expect(reset).to_have_count(0)
    expect(page.locator("#file-status")).to_contain_text("The sandbox was reset")
    assert session_id(page) != before  # a new sandbox session behind the same conversation
    expect(page.locator("#chatbot")).not_to_contain_text("count 59")


def _seconds(title: str) -> str:
    found = re.search(r"(\d+) s", title)
    assert found, title
    return found.group(1)
