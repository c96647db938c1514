"""The session as a notebook: one click downloads the conversation as a valid .ipynb that runs top to bottom
against the session's files, another downloads /mnt/data as a zip."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Page, expect

from azure_sessions import SessionsClient
from tests.e2e.pages import final_answer, open_app, select_model, send, wait_idle

pytestmark = pytest.mark.e2e

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_the_session_downloads_as_a_runnable_notebook_and_its_files_as_a_zip(
    screen: Page, playground, emulator, emulator_token, tmp_path: Path
) -> None:
    page = open_app(screen, playground.url)
    send(page, "please divide by zero")
    expect(final_answer(page, "recovered after the error")).to_be_visible()
    wait_idle(page)
    page.locator("#chat-input input[data-testid='file-upload']").set_input_files(str(ASSETS / "sales.csv"))
    expect(page.locator("#chat-input [data-testid='container_el']")).to_be_visible()  # attached
    send(page, "Load sales.csv and plot the monthly revenue of each region")
    expect(final_answer(page, "from January to December")).to_be_visible()
    wait_idle(page)
    select_model(page, "No model: run my message as Python")
    send(page, "units = pd.read_csv('sales.csv')['units'].sum()\nprint('units', units)\nunits")
    expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text("units")
    wait_idle(page)

    with page.expect_download() as download:
        page.locator("#export-notebook").click()
    assert download.value.suggested_filename.endswith(".ipynb")
    notebook = nbformat.read(download.value.path(), as_version=4)
    nbformat.validate(notebook)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    code = [c for c in notebook.cells if c.cell_type == "code"]
    # the preamble, then every execution: failing step + answer, plot + answer, the Python message
    assert len(code) == 6, [c.source[:40] for c in code]
    assert any("**You:**" in text and "monthly revenue of each region" in text for text in markdown)
    assert any("**You:**" in text and "divide by zero" in text for text in markdown)
    assert any("sales.csv" in text and "Attached" in text for text in markdown)
    assert any(text.startswith("**Agent, step 1:**") and "plot monthly revenue" in text for text in markdown)
    assert any(text.startswith("**Final answer:**") and "grew most" in text for text in markdown)
    outputs = [output for cell in code for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the plot
    failed = [cell for cell in code if "raises-exception" in cell.metadata.get("tags", [])]
    assert len(failed) == 1 and failed[0].outputs[-1].ename == "ZeroDivisionError"
    assert any(output.get("text", "").startswith("units ") for output in outputs)
    expect(page.locator("#file-status")).to_contain_text(".ipynb")
    if screen.screen_name == "desktop":  # the README's picture of a session and its export
        target = ASSETS / "screenshot.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "screenshot.png"
        page.set_viewport_size({"width": 1440, "height": 1100})
        page.locator("#chatbot img[src*='output-1.png']").scroll_into_view_if_needed()
        page.screenshot(path=str(target))

    with page.expect_download() as download:
        page.locator("#export-zip").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert archive.namelist() == ["sales.csv"]
    assert archive.read("sales.csv") == (ASSETS / "sales.csv").read_bytes()

    # runnable top to bottom where /mnt/data holds the session's files: a fresh sandbox, the zip, every cell in order
    with SessionsClient(emulator.endpoint, credential=emulator_token) as sandbox:
        for name in archive.namelist():
            sandbox.upload(io.BytesIO(archive.read(name)), name)
        for cell in code:
            result = sandbox.execute(cell.source)
            raised = not result.succeeded or "Traceback" in result.stderr
            assert raised == ("raises-exception" in cell.metadata.get("tags", [])), (cell.source, result.stderr)
        sandbox.delete_session()
