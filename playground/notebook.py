"""The session as a Jupyter notebook, and /mnt/data as a zip.

`NotebookLog` records the conversation as it happens (the runs' worker threads write to it): the user's messages and
the model's thoughts become markdown cells, every execution of code a code cell with what it printed, returned,
drew and raised. `build` turns it into an nbformat v4 notebook (validated), runnable top to bottom where /mnt/data
holds the session's files: a first cell defines the agent's `final_answer`, and cells that raised are tagged
`raises-exception` so "run all" goes on past them as the session did.
"""

from __future__ import annotations

import base64
import threading
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from azure_sessions import ExecutionReport
from playground.files import FileStore
from playground.steps import exception_label, split_model_output

PREAMBLE = '''\
# The code below reads and writes /mnt/data, as it did in the sandbox. To run this notebook elsewhere, put the
# session's files there first (the playground's "All files (.zip)" download).
import os

if os.path.isdir("/mnt/data"):
    os.chdir("/mnt/data")
else:
    print("/mnt/data does not exist here: unzip the session's files into it first.")


def final_answer(answer):
    """How the agent gives its answer; here the answer is simply shown."""
    return answer'''


class NotebookLog:
    """The session's cells, in order. Thread-safe: a run's worker appends while a page may export."""

    def __init__(self) -> None:
        self._cells: list[Any] = []
        self._lock = threading.Lock()
        self.code_cells = 0

    def __len__(self) -> int:
        return len(self._cells)

    def _add(self, cell: Any) -> None:
        with self._lock:
            self._cells.append(cell)
            self.code_cells += cell.cell_type == "code"

    def user(self, text: str, attached: Sequence[str], agent_mode: bool) -> None:
        """A user message (in "No model" mode the text is the code, recorded with its output instead)."""
        parts = []
        if agent_mode and text.strip():
            parts.append("**You:**\n\n" + quote(text))
        if attached:
            parts.append("**Attached** (uploaded to /mnt/data): " + ", ".join(f"`{name}`" for name in attached))
        if parts:
            self._add(v4.new_markdown_cell("\n\n".join(parts)))

    def agent_step(self, step: Any, reports: Sequence[ExecutionReport]) -> None:
        thought, _ = split_model_output(step.model_output or "")
        if thought:
            self._add(v4.new_markdown_cell(f"**Agent, step {step.step_number}:** {thought}"))
        for report in reports:
            self.cell(report)
        if not reports and step.error is not None:
            self._add(v4.new_markdown_cell(f"**Step {step.step_number} failed before running code:** {step.error}"))

    def cell(self, report: ExecutionReport) -> None:
        self._add(code_cell(report))

    def final_answer(self, output: Any) -> None:
        text = str(getattr(output, "to_string", lambda: output)()) if output is not None else "(no answer)"
        self._add(v4.new_markdown_cell("**Final answer:** " + text))

    def note(self, text: str) -> None:
        self._add(v4.new_markdown_cell(f"*{text}*"))

    def build(self, title: str) -> nbformat.NotebookNode:
        """The notebook, validated against the nbformat schema."""
        with self._lock:
            cells = list(self._cells)
        head = v4.new_markdown_cell(
            f"# {title}\n\nExported from Sessions Playground on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: the "
            "conversation, and every cell of code that ran in the sandbox with its output."
        )
        notebook = v4.new_notebook(
            cells=[head, v4.new_code_cell(PREAMBLE), *cells],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            },
        )
        count = 0
        for cell in notebook.cells:
            if cell.cell_type == "code" and cell.outputs:
                count += 1
                cell.execution_count = count
                for output in cell.outputs:
                    if output.output_type == "execute_result":
                        output.execution_count = count
        nbformat.validate(notebook)
        return notebook


def quote(text: str) -> str:
    return "\n".join("> " + line for line in text.strip().splitlines())


def code_cell(report: ExecutionReport) -> Any:
    """One execution as a code cell: stdout, stderr, the value, the images, the error."""
    result = report.result
    outputs = []
    if report.stdout:
        outputs.append(v4.new_output("stream", name="stdout", text=report.stdout))
    if report.failed:
        outputs.append(error_output(result.stderr or result.status))
    elif result.stderr.strip():
        outputs.append(v4.new_output("stream", name="stderr", text=result.stderr))
    for image in result.images:
        mime = f"image/{(image.format or 'png').lower()}"
        outputs.append(v4.new_output("display_data", data={mime: base64.b64encode(image.data).decode("ascii")}))
    if not report.failed and not result.images and result.result not in (None, ""):
        outputs.append(v4.new_output("execute_result", data={"text/plain": _plain(result.result)}))
    cell = v4.new_code_cell(report.code, outputs=outputs)
    if report.failed:
        cell.metadata["tags"] = ["raises-exception"]
    return cell


def error_output(traceback: str) -> Any:
    label = exception_label(traceback) or "Error"
    name, _, value = label.partition(": ")
    return v4.new_output("error", ename=name, evalue=value, traceback=traceback.rstrip("\n").splitlines())


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def write_notebook(log: NotebookLog, store: FileStore, name: str) -> Path:
    """The notebook as a file in a fresh directory of the session's scratch directory (named after the session)."""
    notebook = log.build(f"Sessions Playground session {name}")
    path = store.new_dir("export") / f"session-{name}.ipynb"
    path.write_text(nbformat.writes(notebook), encoding="utf-8")
    return path


def zip_files(store: FileStore, files: Sequence[Any], name: str) -> Path:
    """Every file of /mnt/data (as listed) in one zip, streamed from the sandbox file by file."""
    path = store.new_dir("export") / f"mnt-data-{name}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info in files:
            if getattr(info, "type", "file") == "directory":
                continue
            with archive.open(info.name, "w", force_zip64=True) as member:
                store.executor.download_file(info.name, member)
    return path
