"""Page helpers for the browser tests (selectors: our elem_ids, then Gradio's data-testid attributes and roles)."""

from __future__ import annotations

from playwright.sync_api import Page, expect


# ---------------------------------------------------------------------------------------------------------------
def open_app(page: Page, url: str) -> Page:
    page.goto(url)
    expect(page.locator("#chat-input textarea")).to_be_visible(timeout=30_000)
    expect(page.locator('#session-panel [data-key="Session"] code')).to_be_visible()
    return page


def send(page: Page, text: str) -> None:
    """Type and submit a message once the chat box accepts one (a run still finishing ignores Enter)."""
    expect(page.locator("#chat-input button[aria-label='Stop']")).to_have_count(0)
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")


def thought(page: Page, title: str):
    """The collapsible step whose title contains `title`."""
    return page.locator("#chatbot .thought-group").filter(has=page.locator(".title", has_text=title))


def final_answer(page: Page, text: str):
    return page.locator("#chatbot [data-testid='bot'][aria-label^=\"bot's message: **Final answer**\"]").filter(
        has_text=text
    )


def wait_idle(page: Page) -> None:
    """The run is over: the chat box offers Send again and no step is pending."""
    expect(page.locator("#chat-input button[aria-label='Stop']")).to_have_count(0)
    expect(page.locator("#chatbot .loading-spinner")).to_have_count(0)


def session_id(page: Page) -> str:
    return page.locator('#session-panel [data-key="Session"] code').inner_text().strip()


def file_rows(page: Page):
    """The rows of the file browser (Gradio's Dataframe draws them as virtual rows, not <tr>)."""
    return page.locator("#file-list .virtual-row")


def file_table(page: Page):
    return page.locator("#file-list .virtual-body")


def select_model(page: Page, label: str) -> None:
    page.locator("#model-picker input").click()
    page.get_by_role("option", name=label).click()
    expect(page.locator('#session-panel [data-key="Model"]')).to_have_text(label)


def select_row(page: Page, name: str) -> None:
    """Click a file's name in the browser and wait until the page says it is selected."""
    file_rows(page).filter(has_text=name).locator("[role=gridcell]").nth(1).click()
    expect(page.locator("#file-status")).to_contain_text(f"Selected {name}")


def marked_row(page: Page):
    """The row the page marks as selected (▶ in the first column)."""
    return file_rows(page).filter(has=page.locator("[data-col='0']", has_text="▶"))


def upload_via_button(page: Page, files: list[dict]) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("#upload-btn").click()
    chooser.value.set_files(files)


def session_of(playground, page: Page):
    """The server-side session the page shows."""
    short = session_id(page)
    return next(s for s in playground.handlers.registry.sessions() if s.short_id == short)
