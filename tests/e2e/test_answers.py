"""Answers in sight: in "No model" mode the output, the value and the error are the answer, readable without a
click; in agent mode a failed step's title names its exception and the final answer stays in view."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import SCRIPTED_LABEL
from tests.e2e.pages import final_answer, open_app, select_model, send, thought, wait_idle

pytestmark = pytest.mark.e2e


def last_answer(page: Page):
    return page.locator("#chatbot [data-testid='bot']").last


def test_python_mode_shows_output_value_and_error_without_a_click(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    select_model(page, "No model: run my message as Python")
    send(page, "value = 6 * 7\nprint('the answer is', value)\nvalue + 0.5")
    answer = last_answer(page)
    expect(answer).to_contain_text("the answer is 42")
    expect(answer).to_contain_text("42.5")
    expect(answer.get_by_text("the answer is 42")).to_be_visible()  # not inside a closed block
    expect(answer.get_by_text("42.5")).to_be_in_viewport()
    wait_idle(page)
    send(page, "print('before the error')\nvalue / 0")
    failed = last_answer(page)
    expect(failed).to_contain_text("ZeroDivisionError: division by zero")
    expect(failed.get_by_text("before the error", exact=True)).to_be_visible()
    expect(failed.locator("strong", has_text="ZeroDivisionError")).to_be_in_viewport()
    expect(page.locator("#chatbot .thought-group")).to_have_count(0)  # nothing hidden behind a click


def test_agent_mode_names_the_failed_steps_exception_and_keeps_the_answer_in_view(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    send(page, "please divide by zero")
    answer = final_answer(page, "recovered after the error")
    expect(answer).to_be_in_viewport()
    wait_idle(page)
    failed = thought(page, "Step 1 · ZeroDivisionError: division by zero")
    expect(failed).to_be_visible()
    failed.locator(".title").click()
    expect(failed).to_contain_text("about to fail")


def test_python_mode_shows_the_message_as_code_and_agent_mode_as_markdown(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    select_model(page, "No model: run my message as Python")
    code = "for i in range(2):\n    print(__name__, i)"
    send(page, code)
    expect(last_answer(page)).to_contain_text("__main__ 1")
    wait_idle(page)
    sent = page.locator("#chatbot [data-testid='user']").last
    block = sent.locator("pre code")
    expect(block).to_have_count(1)
    assert block.inner_text().strip() == code  # indentation and underscores intact
    expect(sent.locator("strong")).to_have_count(0)  # `__name__` is not read as bold
    expect(sent).to_be_in_viewport()

    select_model(page, SCRIPTED_LABEL)
    send(page, "say __hello__ and keep this:\n```python\nx_y = 1\n```")
    expect(final_answer(page, "ECHO: say")).to_be_visible()
    asked = page.locator("#chatbot [data-testid='user']").last
    expect(asked.locator("strong")).to_have_text("hello")  # agent mode: the text is markdown
    expect(asked.locator("pre code")).to_have_text("x_y = 1")  # and a pasted fenced block stays code
