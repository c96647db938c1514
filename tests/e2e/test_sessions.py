"""One agent and one sandbox per browser tab: New session, isolation between users, cleanup when a tab closes."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.pages import file_rows, file_table, final_answer, open_app, send, session_id, wait_idle
from tests.support.harness import wait_until

pytestmark = pytest.mark.e2e


def test_new_session_empties_the_chat_and_the_files(page: Page, playground) -> None:
    open_app(page, playground.url)
    send(page, "remember kiwi")
    expect(final_answer(page, "stored kiwi")).to_be_visible()
    send(page, "write old.txt")
    expect(final_answer(page, "Saved old.txt.")).to_be_visible()
    wait_idle(page)
    expect(file_rows(page)).to_have_count(1)
    before = session_id(page)

    page.locator("#new-session").click()
    expect(page.locator("#chatbot [data-testid='bot']")).to_have_count(0)
    expect(page.locator("#chatbot [data-testid='user']")).to_have_count(0)
    expect(file_rows(page)).to_have_count(0)
    expect(page.locator('#session-panel [data-key="Steps"]')).to_have_text("0")
    assert session_id(page) != before
    # a fresh agent and a fresh sandbox: the variable is gone
    send(page, "recall the marker")
    expect(final_answer(page, "no marker here")).to_be_visible()
    wait_idle(page)
    page.locator("#refresh-btn").click()
    expect(file_rows(page)).to_have_count(0)


def test_two_browser_contexts_are_isolated(browser: Browser, playground) -> None:
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        alice, bob = (open_app(context.new_page(), playground.url) for context in contexts)
        assert session_id(alice) != session_id(bob)
        send(alice, "remember apple")
        send(bob, "remember banana")  # both run at the same time
        expect(final_answer(alice, "stored apple")).to_be_visible()
        expect(final_answer(bob, "stored banana")).to_be_visible()
        send(alice, "write alice.txt")
        expect(final_answer(alice, "Saved alice.txt.")).to_be_visible()
        send(alice, "recall")
        send(bob, "recall")
        expect(final_answer(alice, "marker is apple")).to_be_visible()
        expect(final_answer(bob, "marker is banana")).to_be_visible()
        wait_idle(bob)
        expect(alice.locator("#chatbot")).not_to_contain_text("banana")
        expect(bob.locator("#chatbot")).not_to_contain_text("apple")
        bob.locator("#refresh-btn").click()
        expect(bob.locator("#file-status")).not_to_contain_text("Could not")
        expect(file_table(bob)).not_to_contain_text("alice.txt")
        expect(file_table(alice)).to_contain_text("alice.txt")
    finally:
        for context in contexts:
            context.close()


def test_a_closed_tab_keeps_its_session_for_a_return_until_the_idle_timeout(
    browser: Browser, playground, emulator
) -> None:
    context = browser.new_context()
    page = open_app(context.new_page(), playground.url)
    send(page, "remember cherry")
    expect(final_answer(page, "stored cherry")).to_be_visible()
    wait_idle(page)
    short = session_id(page)
    registry = playground.handlers.registry
    (session,) = [s for s in registry.sessions() if s.short_id == short]
    page.close()  # the tab goes; the browser (its stored key) stays
    back = open_app(context.new_page(), playground.url)
    assert session_id(back) == short
    expect(final_answer(back, "stored cherry")).to_be_visible()
    context.close()
    assert session.session_id in emulator.session_identifiers()
    # idle past the timeout: the agent, the sandbox session and the temp dir are deleted
    registry.reap(now=time.monotonic() + playground.handlers.settings.idle_timeout + 1)
    wait_until(
        lambda: session.cleaned.is_set() and not session.store.scratch.exists(),
        what="the closed tab's session is cleaned up",
    )
    assert session.session_id not in emulator.session_identifiers()
