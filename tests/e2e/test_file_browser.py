"""A file browser that acts on what you see: the selection is a file's name, marked on its row whatever the
listing's order; Delete names the file and asks first; selecting a file previews it."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.e2e.pages import file_rows, file_table, marked_row, open_app, select_row, session_of, upload_via_button

pytestmark = pytest.mark.e2e


def csv_file(name: str, text: str = "a,b\n1,2\n") -> dict:
    return {"name": name, "mimeType": "text/csv", "buffer": text.encode()}


def test_the_selection_follows_its_file_through_a_refresh_and_delete_asks_first(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    upload_via_button(page, [csv_file("out.csv"), csv_file("zeta.csv")])
    expect(file_rows(page)).to_have_count(2)
    select_row(page, "out.csv")
    expect(marked_row(page)).to_contain_text("out.csv")
    # code writes a file that sorts above the selection; the list refreshes between select and delete
    session_of(playground, page).executor.run_code_raise_errors("open('/mnt/data/alpha.csv', 'w').write('x\\n')")
    page.locator("#refresh-btn").click()
    expect(file_rows(page)).to_have_count(3)
    expect(file_rows(page).first).to_contain_text("alpha.csv")
    expect(marked_row(page)).to_have_count(1)
    expect(marked_row(page)).to_contain_text("out.csv")
    expect(page.locator("#delete-btn")).to_have_text("Delete out.csv…")

    page.locator("#delete-btn").click()
    question = page.locator("#delete-question")
    expect(question).to_contain_text("Delete out.csv from /mnt/data? This cannot be undone.")
    page.locator("#delete-no").click()
    expect(question).to_have_count(0)
    expect(file_rows(page)).to_have_count(3)  # Cancel deleted nothing

    page.locator("#delete-btn").click()
    page.locator("#delete-yes").click()
    expect(page.locator("#file-status")).to_contain_text("Deleted out.csv")
    expect(file_rows(page)).to_have_count(2)
    expect(file_table(page)).to_contain_text("alpha.csv")
    expect(file_table(page)).to_contain_text("zeta.csv")
    expect(file_table(page)).not_to_contain_text("out.csv")
    expect(marked_row(page)).to_have_count(0)
    expect(page.locator("#delete-btn")).to_be_disabled()


def test_a_selected_file_that_disappears_is_visibly_unselected(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    upload_via_button(page, [csv_file("gone.csv"), csv_file("stays.csv")])
    select_row(page, "gone.csv")
    session_of(playground, page).executor.delete_file("gone.csv")
    page.locator("#refresh-btn").click()
    expect(page.locator("#file-status")).to_contain_text(
        "“gone.csv” is no longer in /mnt/data; the selection was cleared"
    )
    expect(marked_row(page)).to_have_count(0)
    expect(page.locator("#delete-btn")).to_be_disabled()
    expect(page.locator("#download-btn")).to_be_disabled()
    expect(page.locator("#preview-table")).to_have_count(0)


def _excel() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"city": ["Oslo", "Lima"], "people": [709_000, 10_000_000]}).to_excel(buffer, index=False)
    return buffer.getvalue()


def _parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"id": range(100), "score": [i / 2 for i in range(100)]}).to_parquet(buffer)
    return buffer.getvalue()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_selecting_a_file_previews_it(screen: Page, playground) -> None:
    page = open_app(screen, playground.url)
    lines = "".join(f"line {n}\n" for n in range(1, 101))
    upload_via_button(
        page,
        [
            csv_file("table.csv", "x,y\n" + "".join(f"{n},{n * n}\n" for n in range(50))),
            {"name": "tabs.tsv", "mimeType": "text/tab-separated-values", "buffer": b"k\tv\nalpha\t1\n"},
            {"name": "book.xlsx", "mimeType": "application/octet-stream", "buffer": _excel()},
            {"name": "data.parquet", "mimeType": "application/octet-stream", "buffer": _parquet()},
            {"name": "red.png", "mimeType": "image/png", "buffer": _png()},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": lines.encode()},
            {"name": "blob.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256))},
        ],
    )
    expect(file_rows(page)).to_have_count(7)
    caption, table = page.locator("#preview-caption"), page.locator("#preview-table")

    select_row(page, "table.csv")
    expect(caption).to_contain_text("first 20 rows · 2 columns")
    expect(table).to_contain_text("361")  # 19², the 20th row
    expect(table).not_to_contain_text("400")  # 20²: past the preview
    select_row(page, "tabs.tsv")
    expect(table).to_contain_text("alpha")
    select_row(page, "book.xlsx")
    expect(caption).to_contain_text("2 rows · 2 columns")
    expect(table).to_contain_text("Lima")
    select_row(page, "data.parquet")
    expect(caption).to_contain_text("first 20 of 100 rows")
    expect(table).to_contain_text("9.5")
    select_row(page, "red.png")
    expect(table).to_have_count(0)
    expect(caption).to_contain_text("64×32 pixels")
    image = page.locator("#preview-image img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 64
    select_row(page, "notes.txt")
    expect(caption).to_contain_text("first 40 lines")
    expect(page.locator("#preview-text textarea")).to_have_value(re.compile(r"^line 1\n.*\nline 40$", re.DOTALL))
    select_row(page, "blob.bin")
    expect(caption).to_contain_text("No preview for this binary file")
    expect(page.locator("#preview-text")).to_have_count(0)
