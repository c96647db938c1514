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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from azure_sessions import ExecutionError, ExecutionReport
from playground.files import FileStore
from playground.formatting import clip, human_size
from playground.steps import split_model_output, stderr_before

OUTPUT_CHARS = 64_000  # of one output stream, value or traceback
IMAGE_BYTES = 8 * 1024 * 1024
TOTAL_BYTES = 64 * 1024 * 1024

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
    """The session's cells, in order. Thread-safe: a run's worker appends while a page may export.

    Bounded: each output at most OUTPUT_CHARS (its head and tail), each image at most IMAGE_BYTES, and the whole log
    at most TOTAL_BYTES; past that, cells are no longer recorded and the notebook says so."""

    def __init__(self) -> None:
        self._cells: list[Any] = []
        self._lock = threading.Lock()
        self.code_cells = 0
        self.size = 0
        self.full = False

    def __len__(self) -> int:
        return len(self._cells)

    def _add(self, cell: Any) -> None:
        size = _cell_size(cell)
        with self._lock:
            if self.full:
                return
            if self.size + size > TOTAL_BYTES:
                self.full = True
                cell = v4.new_markdown_cell(
                    f"*The notebook keeps at most {TOTAL_BYTES // 2**20} MB of the session: what followed here is not "
                    "recorded.*"
                )
            self._cells.append(cell)
            self.size += size
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
            self._add(v4.new_markdown_cell(f"**Agent, step {step.step_number}:** {clip(thought, OUTPUT_CHARS)}"))
        for report in reports:
            self.cell(report)
        if not reports and step.error is not None:
            self._add(
                v4.new_markdown_cell(
                    f"**Step {step.step_number} failed before running code:** {clip(str(step.error), OUTPUT_CHARS)}"
                )
            )

    def cell(self, report: ExecutionReport) -> None:
        self._add(code_cell(report))

    def final_answer(self, output: Any) -> None:
        text = str(getattr(output, "to_string", lambda: output)()) if output is not None else "(no answer)"
        self._add(v4.new_markdown_cell("**Final answer:** " + clip(text, OUTPUT_CHARS)))

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
    """One execution as a code cell: stdout, stderr, the value, the images, the error (each within its bound)."""
    result = report.result
    outputs = []
    if report.stdout:
        outputs.append(v4.new_output("stream", name="stdout", text=clip(report.stdout, OUTPUT_CHARS)))
    if report.error is not None:
        warned = stderr_before(result, report.error)
        if warned.strip():
            outputs.append(v4.new_output("stream", name="stderr", text=clip(warned, OUTPUT_CHARS)))
        outputs.append(error_output(report.error))
    elif result.stderr.strip():
        outputs.append(v4.new_output("stream", name="stderr", text=clip(result.stderr, OUTPUT_CHARS)))
    for image in result.images:
        if len(image.data) > IMAGE_BYTES:
            note = f"[an image of {human_size(len(image.data))} is not kept: the notebook keeps images up to "
            outputs.append(v4.new_output("stream", name="stdout", text=note + f"{human_size(IMAGE_BYTES)}]\n"))
            continue
        mime = f"image/{(image.format or 'png').lower()}"
        outputs.append(v4.new_output("display_data", data={mime: base64.b64encode(image.data).decode("ascii")}))
    if not report.failed and not result.images and result.result not in (None, ""):
        value = clip(_plain(result.result), OUTPUT_CHARS)
        outputs.append(v4.new_output("execute_result", data={"text/plain": value}))
    cell = v4.new_code_cell(clip(report.code, OUTPUT_CHARS), outputs=outputs)
    if report.failed:
        cell.metadata["tags"] = ["raises-exception"]
    return cell


def error_output(error: ExecutionError) -> Any:
    """The exception a cell raised, as Jupyter shows one: its name, its value and its traceback's lines."""
    traceback = clip(error.traceback, OUTPUT_CHARS).rstrip("\n").splitlines()
    return v4.new_output(
        "error", ename=error.name or "Error", evalue=clip(error.value, OUTPUT_CHARS), traceback=traceback
    )


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _cell_size(cell: Any) -> int:
    """About how many bytes a cell holds (its source and outputs)."""
    size = len(cell.source)
    for output in cell.get("outputs", ()):
        size += len(output.get("text", "")) + sum(len(str(v)) for v in output.get("data", {}).values())
        size += sum(len(line) for line in output.get("traceback", ()))
    return size


def write_notebook(log: NotebookLog, store: FileStore, name: str) -> Path:
    """The notebook as a file in a fresh directory of the session's scratch directory (named after the session)."""
    notebook = log.build(f"Sessions Playground session {name}")
    path = store.new_dir("export", keep=2) / f"session-{name}.ipynb"
    return store.write(path, nbformat.writes(notebook).encode("utf-8"))
