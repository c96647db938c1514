"""The page under abuse: uploads over the limit, 50 rapid submits, a tab closed mid-run.
Another user stays served throughout, the closed tab's sandbox session is deleted, and nothing is left behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.e2e.pages import file_rows, final_answer, open_app, send, session_id, thought, wait_idle
from tests.e2e.script import responder
from tests.reliability.support import running_playground, wait_until
from tests.support.scripted_model import ScriptedModel

pytestmark = pytest.mark.e2e

TOKEN = "ui-abuse-token"
LIMIT = 256 * 1024
MODEL = "Scripted abuse model"

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from tests.reliability.conftest import checked_emulator

    with checked_emulator(token=TOKEN, prestart=2) as emu:
        cache = tmp_path_factory.mktemp("gradio-cache")
        model = ScriptedModel(responder=responder, chunk_delay=0.05)
        seen: dict[str, Path] = {}  # every user session's temp dir, checked at the end
        with running_playground(emu, TOKEN, {MODEL: lambda: model}, cache, max_upload_bytes=LIMIT) as (url, app):
            registry = app.registry

            def remember() -> None:
                for session in registry.sessions():
                    seen[session.session_id] = session.store.scratch

            yield SimpleNamespace(url=url, app=app, emu=emu, registry=registry, remember=remember, cache=cache)
            remember()
        # the app closed every session: temp dirs gone, sandbox sessions deleted; then the emulator leaves nothing
        assert [str(p) for p in seen.values() if p.exists()] == []
        assert emu.session_identifiers() == []


def sandbox_ids(emu) -> set[str]:
    return set(emu.session_identifiers())


def user_session(app, page: Page):
    short = session_id(page)
    app.remember()
    return next(s for s in app.registry.sessions() if s.short_id == short)


def other_user_completes_a_task(browser: Browser, app, text: str) -> None:
    context = browser.new_context()
    try:
        page = open_app(context.new_page(), app.url)
        send(page, text)
        expect(final_answer(page, f"ECHO: {text}")).to_be_visible()
        wait_idle(page)
    finally:
        context.close()


def test_uploads_over_the_limit_are_refused_and_others_are_unaffected(browser: Browser, app) -> None:
    context = browser.new_context()
    page = open_app(context.new_page(), app.url)
    too_big = b"0" * (LIMIT + 1)
    with page.expect_file_chooser() as chooser:
        page.locator("#upload-btn").click()
    chooser.value.set_files([{"name": "huge.bin", "mimeType": "application/octet-stream", "buffer": too_big}])
    expect(page.get_by_text("exceed the maximum allowed size")).to_be_visible()
    expect(file_rows(page)).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Traceback")
    # a client that skips the browser's check: the server refuses the body itself, and keeps nothing of it; without
    # the page's upload ticket nothing is accepted at all
    before = sorted(p.name for p in app.cache.rglob("*"))
    ticket = page.evaluate("() => window.__playgroundTicket")
    assert ticket
    for headers, refused in (({"x-playground-ticket": ticket}, (400, 413)), ({}, (403,))):
        reply = requests.post(app.url + "gradio_api/upload", files={"files": ("huge.bin", too_big)}, headers=headers,
                              timeout=60)  # fmt: skip
        assert reply.status_code in refused, reply.status_code
    anonymous = requests.post(app.url + "gradio_api/upload", files={"files": ("small.bin", b"x")}, timeout=60)
    assert anonymous.status_code == 403 and "open page" in anonymous.text
    assert sorted(p.name for p in app.cache.rglob("*")) == before
    session = user_session(app, page)
    assert session.executor.list_files() == []
    other_user_completes_a_task(browser, app, "still fine after the big upload")
    context.close()


def test_fifty_rapid_submits_do_not_block_other_users(browser: Browser, app) -> None:
    context, bystander = browser.new_context(), browser.new_context()
    page = open_app(context.new_page(), app.url)
    other = open_app(bystander.new_page(), app.url)
    page.locator("#chat-input textarea").focus()
    for n in range(50):
        page.keyboard.insert_text(f"spam {n}")
        page.keyboard.press("Enter")
        if n == 25:  # another user asks in the middle of the flood
            send(other, "served during the flood")
            page.locator("#chat-input textarea").focus()
    expect(final_answer(other, "ECHO: served during the flood")).to_be_visible()
    bystander.close()
    wait_idle(page)
    answers = page.locator("#chatbot [data-testid='bot'][aria-label^=\"bot's message: **Final answer**\"]")
    assert 1 <= answers.count() <= 50
    expect(page.locator("body")).not_to_contain_text("Traceback")
    expect(page.locator(".toast-body.error")).to_have_count(0)
    session = user_session(app, page)
    assert session.session_id in sandbox_ids(app.emu)  # one sandbox for the tab, however many submits
    send(page, "after the flood")  # the tab itself is usable again
    expect(final_answer(page, "ECHO: after the flood")).to_be_visible()
    context.close()


def test_a_tab_closed_mid_run_spares_others_and_its_sandbox_goes_at_the_idle_timeout(browser: Browser, app) -> None:
    closing = browser.new_context()
    page = open_app(closing.new_page(), app.url)
    send(page, "run a slow loop")
    expect(thought(page, "running code")).to_be_visible()
    session = user_session(app, page)
    (run,) = session.runs()
    assert session.session_id in sandbox_ids(app.emu) and not run.settled.is_set()
    closing.close()  # mid-run: the run goes on for the page's return (a reload), bounded by its steps and timeouts
    other_user_completes_a_task(browser, app, "served while a tab closes")
    app.registry.reap(now=time.monotonic() + 10**6)
    assert not session.closed and session in app.registry.sessions()  # never while its run goes on
    wait_until(run.settled.is_set, timeout=120, what="the run ended")
    app.registry.reap(now=time.monotonic() + 10**6)
    wait_until(
        lambda: session.cleaned.is_set() and not session.store.scratch.exists(), timeout=30, what="session closed"
    )
    wait_until(lambda: session.session_id not in sandbox_ids(app.emu), timeout=30, what="sandbox deleted")
