"""The chat: live steps, code, logs, plots, final answers, errors, stop, examples and "No model" mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import file_table, final_answer, open_app, send, thought, wait_idle

pytestmark = pytest.mark.e2e

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_a_run_streams_pending_steps_code_logs_plot_and_final_answer(page: Page, playground) -> None:
    open_app(page, playground.url)
    send(page, "plot squares")
    step1 = thought(page, "Step 1")
    # pending while the model writes and while the code runs, then done with its duration and tokens
    expect(step1.locator(".loading-spinner")).to_be_visible()
    expect(thought(page, "Step 1 · running code")).to_be_visible()
    expect(page.locator("#chat-input button[aria-label='Stop']")).to_be_visible()
    expect(final_answer(page, "Plotted squares.")).to_be_visible()
    wait_idle(page)
    done = thought(page, "Step 1")
    expect(done.locator(".title")).to_contain_text("out tokens")
    expect(done.locator(".loading-spinner")).to_have_count(0)
    done.locator(".title").click()  # a done step is collapsed; open it
    expect(done.locator("pre code").first).to_contain_text("plt.plot([1, 2, 3], [1, 4, 9])")
    expect(done).to_contain_text("plotting squares")
    # the matplotlib figure is an image inline in the chat, outside the collapsed step
    image = page.locator("#chatbot img[src*='output-1.png']")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") > 100
    expect(page.locator('#session-panel [data-key="Steps"]')).to_have_text("2")


def test_example_prompt_runs_with_one_click(page: Page, playground) -> None:
    open_app(page, playground.url)
    page.locator("#chatbot").get_by_text("Plot monthly revenue by region").click()
    expect(final_answer(page, "grew most")).to_be_visible()
    wait_idle(page)
    expect(page.locator("#chatbot img[src*='output-1.png']")).to_be_visible()
    expect(file_table(page)).to_contain_text("sales.csv")
    step = thought(page, "Step 1")
    step.locator(".title").click()
    expect(step.locator("pre code").first).to_be_visible()
    expect(step).to_contain_text("Monthly revenue by region")


def test_an_error_step_is_shown_readably_and_the_agent_recovers(page: Page, playground) -> None:
    open_app(page, playground.url)
    send(page, "please divide by zero")
    expect(final_answer(page, "recovered after the error")).to_be_visible()
    error_step = thought(page, "Step 1 · ZeroDivisionError: division by zero")  # the title names the exception
    error_step.locator(".title").click()
    expect(error_step).to_contain_text("ZeroDivisionError")
    expect(error_step).to_contain_text("about to fail")
    expect(thought(page, "Step 2")).to_be_visible()
