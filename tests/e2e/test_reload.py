"""Nothing lost on reload: the browser keeps a secret key; a reload (or a second tab of the same browser) returns
to the same conversation, sandbox session and files, and follows a run in progress; New session starts afresh."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.pages import file_table, final_answer, open_app, send, session_id, session_of, thought, wait_idle

pytestmark = pytest.mark.e2e

STORAGE_KEY = "sessions-playground-key"


def test_a_reload_returns_to_the_same_conversation_sandbox_and_files(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    send(page, "remember kiwi")
    expect(final_answer(page, "stored kiwi")).to_be_visible()
    send(page, "write kept.txt")
    expect(final_answer(page, "Saved kept.txt.")).to_be_visible()
    wait_idle(page)
    before = session_id(page)
    sandbox = session_of(playground, page).session_id
    stored = page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')")
    assert stored and sandbox not in stored and before not in stored  # a key of its own, not the sandbox's id

    page.reload()
    open_app(page, playground.url)
    assert session_id(page) == before
    expect(final_answer(page, "stored kiwi")).to_be_visible()
    expect(file_table(page)).to_contain_text("kept.txt")
    send(page, "recall")
    expect(final_answer(page, "marker is kiwi")).to_be_visible()  # the same variables


def test_a_new_browsers_first_message_is_not_lost_while_its_key_is_on_the_way(screen: Page, playground) -> None:
    """The page's load gives a new browser its key; a message sent before would carry none, and the server acts only
    for a key. The chat box stays disabled until the load has answered, so the first message always carries it."""
    held: list | None = []

    def hold_until_released(route) -> None:  # the page's load waits here until the box has been seen disabled
        (held.append if held is not None else lambda r: r.continue_())(route)

    screen.route("**/gradio_api/queue/join*", hold_until_released)
    screen.goto(playground.url)
    box = screen.locator("#chat-input textarea")
    expect(box).to_be_visible(timeout=30_000)
    expect(box).to_be_disabled()
    waiting, held = held, None
    for route in waiting:
        route.continue_()
    expect(box).to_be_enabled()
    send(screen, "remember fig")
    expect(final_answer(screen, "stored fig")).to_be_visible()


def test_a_reload_during_a_run_follows_it_to_its_end(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    send(page, "plot reloaded")
    expect(thought(page, "Step 1")).to_be_visible()
    page.reload()
    open_app(page, playground.url)
    expect(final_answer(page, "Plotted reloaded.")).to_be_visible()
    expect(page.locator("#chatbot")).to_contain_text("plot reloaded")
    wait_idle(page)


def test_a_second_tab_shares_the_session_and_new_session_starts_afresh(browser: Browser, playground) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        first = open_app(context.new_page(), playground.url)
        send(first, "remember plum")
        expect(final_answer(first, "stored plum")).to_be_visible()
        wait_idle(first)
        second = open_app(context.new_page(), playground.url)
        assert session_id(second) == session_id(first)
        expect(final_answer(second, "stored plum")).to_be_visible()

        old = session_id(first)
        first.locator("#new-session").click()
        expect(first.locator("#chatbot [data-testid='user']")).to_have_count(0)
        assert session_id(first) != old
        first.reload()
        open_app(first, playground.url)
        assert session_id(first) != old  # the fresh session is the one a reload returns to
        expect(first.locator("#chatbot [data-testid='user']")).to_have_count(0)
        send(first, "recall")
        expect(final_answer(first, "no marker here")).to_be_visible()
    finally:
        context.close()


def test_a_key_the_server_never_issued_gets_a_fresh_session(browser: Browser, playground) -> None:
    context = browser.new_context()
    try:
        page = open_app(context.new_page(), playground.url)
        own = session_id(page)
        page.evaluate(f"() => localStorage.setItem('{STORAGE_KEY}', 'forged:value')")
        page.reload()
        open_app(page, playground.url)
        assert session_id(page) != own
    finally:
        context.close()


def test_a_message_from_a_second_tab_waits_for_the_first_tabs_run_and_says_so(browser: Browser, playground) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        first = open_app(context.new_page(), playground.url)
        second = open_app(context.new_page(), playground.url)
        send(first, "count slowly")
        expect(thought(first, "Step 1 · running code")).to_be_visible()
        send(second, "hello from the second tab")
        waiting = thought(second, "Waiting")
        expect(waiting).to_contain_text("A run sent from another tab of this browser is still going")
        first.locator("#chat-input button[aria-label='Stop']").click()
        expect(final_answer(second, "ECHO: hello from the second tab")).to_be_visible()
        expect(second.locator("#chatbot")).to_contain_text("The running code was interrupted")  # one conversation
        wait_idle(second)
    finally:
        context.close()
