"""The /mnt/data file browser and files in the chat: drop, upload, list, download, delete, agent-written files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import UPLOAD_LIMIT_BYTES
from tests.e2e.pages import (
    file_rows,
    file_table,
    final_answer,
    open_app,
    select_row,
    send,
    upload_via_button,
    wait_idle,
)

pytestmark = pytest.mark.e2e

DROP_JS = """([name, text]) => {
    const data = new DataTransfer();
    data.items.add(new File([text], name, {type: 'text/csv'}));
    return data;
}"""


def test_a_file_dropped_on_the_chat_box_is_uploaded_listed_and_read_by_the_agent(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    data = page.evaluate_handle(DROP_JS, ["dropped.csv", "x,y\n3,4\n"])
    target = page.locator("#chat-input [role='group']")
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": data})
    expect(page.locator("#chat-input [data-testid='container_el']")).to_be_visible()
    send(page, "read dropped.csv")
    expect(final_answer(page, "File says: x,y | 3,4")).to_be_visible()
    wait_idle(page)
    expect(file_table(page)).to_contain_text("dropped.csv")
    # the attachment shows its name and size
    attached = page.locator("#chatbot [data-testid='user']").filter(has_text="📎")
    expect(attached).to_contain_text("dropped.csv · 8 B")
    expect(attached).to_be_visible()


def test_download_returns_identical_bytes_and_delete_removes_the_file(page: Page, playground, tmp_path: Path) -> None:
    open_app(page, playground.url)
    payload = bytes(range(256)) * 512 + os.urandom(4096)  # every byte value, not valid UTF-8
    upload_via_button(
        page,
        [
            {"name": "blob.bin", "mimeType": "application/octet-stream", "buffer": payload},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"keep me\n"},
        ],
    )
    expect(page.locator("#file-status")).to_contain_text("Uploaded")
    expect(file_rows(page)).to_have_count(2)
    select_row(page, "blob.bin")
    with page.expect_download() as download:
        page.locator("#download-btn").click()
    assert download.value.suggested_filename == "blob.bin"
    assert Path(download.value.path()).read_bytes() == payload

    page.locator("#delete-btn").click()
    expect(page.locator("#delete-question")).to_contain_text("Delete blob.bin from /mnt/data?")
    page.locator("#delete-yes").click()
    expect(page.locator("#file-status")).to_contain_text("Deleted blob.bin")
    expect(file_rows(page)).to_have_count(1)
    expect(file_table(page)).not_to_contain_text("blob.bin")
    expect(page.locator("#delete-btn")).to_be_disabled()


def test_a_file_the_agent_writes_appears_in_the_browser_and_as_a_chat_attachment(page: Page, playground) -> None:
    open_app(page, playground.url)
    send(page, "write report.txt")
    expect(final_answer(page, "Saved report.txt.")).to_be_visible()
    wait_idle(page)
    expect(file_table(page)).to_contain_text("report.txt")
    attachment = page.locator("#chatbot [data-testid='bot'] a").filter(has_text="report.txt")
    expect(attachment).to_be_visible()
    with page.expect_download() as download:
        attachment.click()
    assert Path(download.value.path()).read_text() == "written by the agent\n"


def test_a_refused_upload_shows_a_message_not_a_stack_trace(page: Page, playground) -> None:
    open_app(page, playground.url)
    too_big = b"0" * (UPLOAD_LIMIT_BYTES + 1)
    upload_via_button(page, [{"name": "huge.bin", "mimeType": "application/octet-stream", "buffer": too_big}])
    expect(page.get_by_text("exceed the maximum allowed size")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Traceback")
    expect(file_rows(page)).to_have_count(0)
    # the browser is still usable afterwards
    upload_via_button(page, [{"name": "small.txt", "mimeType": "text/plain", "buffer": b"ok"}])
    expect(file_table(page)).to_contain_text("small.txt")
