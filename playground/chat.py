"""What one user message does, in a worker thread: wait for the previous run, upload the attachments, then run the
agent (or the message itself as Python), posting typed messages to its `Run` as it goes.

The worker owns every slow call (uploads, model start-up, LLM calls, sandbox executions, file listings); pages only
read the run's transcript, so none of them blocks, and a page that goes away never closes smolagents' own stream
(which would hit its "generator ignored GeneratorExit" bug).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradio import ChatMessage
from smolagents.memory import ActionStep, FinalAnswerStep
from smolagents.utils import AgentError

from azure_sessions import SESSION_LOST_NOTICE, ExecutionReport
from playground import files as fs
from playground.formatting import fence, human_size, markdown_escape
from playground.model_catalog import NO_MODEL, ModelUnavailableError
from playground.runs import (
    CANNOT_INTERRUPT,
    INTERRUPTED,
    AgentEvent,
    Ended,
    Failed,
    PythonDone,
    PythonStarted,
    Run,
    Started,
    Stopped,
    Uploaded,
)
from playground.steps import IMAGE_SUFFIXES, StepExtras, is_image, is_interrupt, strip_code_fences

if TYPE_CHECKING:
    from playground.sessions import UserSession

log = logging.getLogger(__name__)

ATTACH_LIMIT_BYTES = 25 * 1024 * 1024  # bigger new files are listed in the browser but not attached to the chat
RESET_NOTE = (
    "Note: the sandbox was reset since your last step; every variable and every file in /mnt/data is gone. "
    "Re-create what you need."
)


def user_messages(text: str, paths: Sequence[str], as_code: bool = False) -> list[ChatMessage]:
    """The user's message as the chat shows it: the text, then the attachments by name and size. `as_code` ("No
    model" mode: the message is Python) shows the text as a Python block, unless it holds its own fenced block."""
    messages = []
    if text.strip():
        messages.append(ChatMessage(role="user", content=shown_as_code(text) if as_code else text))
    if paths:
        messages.append(ChatMessage(role="user", content=attachments_text(paths)))
    return messages


def shown_as_code(text: str) -> str:
    """Python typed as a message, shown as code (indentation and underscores intact, nothing read as markdown). A
    message that already holds a fenced block is shown as typed: its code is in the block."""
    if "```" in text and strip_code_fences(text) != text:
        return text
    return fence(text.strip("\n"), "python")


def attachments_text(paths: Sequence[str]) -> str:
    """One line per attached file: its name and size (markdown)."""
    lines = []
    for path in paths:
        try:
            size = human_size(os.path.getsize(path))
        except OSError:
            size = "?"
        lines.append(f"📎 **{markdown_escape(Path(path).name)}** · {size}")
    return "  \n".join(lines)


def compose_task(text: str, uploaded: Sequence[str], sandbox_reset: bool = False) -> str:
    task = text.strip() or "Have a look at the attached files and tell me what they contain."
    if uploaded:
        listing = "\n".join(f"- /mnt/data/{name}" for name in uploaded)
        task += f"\n\nFiles attached to this message (already uploaded to /mnt/data):\n{listing}"
    if sandbox_reset:
        task += "\n\n" + RESET_NOTE
    return task


def run_message(
    session: UserSession,
    text: str,
    paths: Sequence[str],
    model_key: str,
    user_token: str | None = None,
    tab: str = "",
) -> Run:
    """Add a run for the message to the session's conversation and start its worker thread (it first waits for the
    session's previous run to settle). Pages follow the session to see it; tests can wait on `run.settled`."""
    agent_mode = model_key != NO_MODEL
    run = session.begin_run(user_messages(text, paths, as_code=not agent_mode), agent_mode, tab)
    run.thread = threading.Thread(
        target=_Worker(session, run),
        args=(text, list(paths), model_key, user_token),
        name=f"run-{session.short_id}",
        daemon=True,
    )
    run.thread.start()
    return run


class _Worker:
    """The body of a run's thread; talks to the page only through `run.post`. Files go through the session's store
    (which publishes the listing to every tab); the agent, the notebook and the totals are the session's."""

    def __init__(self, session: UserSession, run: Run) -> None:
        self.session, self.run = session, run
        self.store = session.store
        self.snapshot: fs.Snapshot = {}
        self.reports: list[ExecutionReport] = []
        self.interrupted = False  # an execution of this run ended in a KeyboardInterrupt

    def __call__(self, text: str, paths: Sequence[str], model_key: str, user_token: str | None) -> None:
        try:
            if self.run.previous is not None:
                self.run.previous.settled.wait()
            if self.run.stop.is_set():
                self.run.post(Stopped("It was stopped before it started; nothing ran."))
                return
            self.run.post(Started())
            uploaded: list[str] = []
            if paths:
                uploaded, refused = self.store.upload(paths)
                self.run.post(Uploaded(uploaded, refused))
                self._publish_listing()
            self.session.notebook.user(text, [Path(p).name for p in paths], agent_mode=model_key != NO_MODEL)
            if model_key == NO_MODEL:
                if text.strip():  # files alone are just uploaded
                    self._run_python(text)
            else:
                task = compose_task(text, uploaded, self.session.take_sandbox_reset())
                self._run_agent(task, model_key, user_token)
        except ModelUnavailableError as exc:
            self.run.post(Failed(str(exc)))
        except Exception as exc:  # shown in the chat; the page never gets a stack trace
            log.exception("run failed")
            self.run.post(Failed(f"{type(exc).__name__}: {exc}"))
        finally:
            self.run.post(Ended())

    # ---- the two modes -------------------------------------------------------------------------------------------
    def _run_agent(self, task: str, model_key: str, user_token: str | None) -> None:
        agent = self.session.agent_for(model_key, user_token)
        executor = self.store.executor
        self._publish_listing()
        remove = executor.add_listener(self._collect)
        try:
            stream = agent.run(task, stream=True, reset=False)
            if self.run.stop.is_set():
                agent.interrupt()
            for event in stream:
                extras = None
                if isinstance(event, ActionStep):
                    self.session.totals.add_step(event)
                    reports = self._take_reports()
                    extras = self._step_extras(event.action_output, reports)
                    self._record(lambda book, step=event, done=reports: book.agent_step(step, done))
                elif isinstance(event, FinalAnswerStep):
                    extras = self._final_extras(event.output)
                    self._record(lambda book, output=event.output: book.final_answer(output))
                self.run.post(AgentEvent(event, extras))
        except AgentError as exc:
            if self.run.stop.is_set() or "interrupted" in str(exc).lower():
                self.run.post(Stopped(self._stop_detail()))
                self._record(lambda book: book.note("The run was stopped."))
            else:
                self.run.post(Failed(str(exc)))
        finally:
            remove()

    def _run_python(self, text: str) -> None:
        executor = self.store.executor
        code = strip_code_fences(text)
        self.run.post(PythonStarted(code))
        self._publish_listing()
        remove = executor.add_listener(self._collect)
        started = time.monotonic()
        logs, result, error, output = "", None, "", None
        try:
            code_output = executor.run_code_raise_errors(code)
            logs, output = code_output.logs or "", code_output.output
            result = None if output is None or is_image(output) else str(output)
        except AgentError as exc:
            error = str(exc)
        finally:
            remove()
        duration = time.monotonic() - started
        self.session.totals.steps += 1
        self.session.totals.seconds += duration
        reports = self._take_reports()
        extras = self._step_extras(output, reports)
        self._record(lambda book: [book.cell(report) for report in reports])
        self.run.post(PythonDone(logs, result, error, duration, extras))
        if self.run.stop.is_set():
            self.run.post(Stopped(self._stop_detail()))

    def _collect(self, report: ExecutionReport) -> None:
        self.reports.append(report)
        if report.failed and is_interrupt(report.result.stderr):
            self.interrupted = True

    def _take_reports(self) -> list[ExecutionReport]:
        reports, self.reports = self.reports, []
        return reports

    def _stop_detail(self) -> str:
        if self.run.interrupt == INTERRUPTED or self.interrupted:
            return "The running code was interrupted; the session keeps its variables and files."
        if self.run.interrupt == CANNOT_INTERRUPT:
            return (
                "The code ran to its end (this sandbox cannot interrupt it) and the agent stopped after it; "
                "variables and files are kept."
            )
        return "The agent stopped before running more code; variables and files are kept."

    # ---- what a step produced ------------------------------------------------------------------------------------
    def _publish_listing(self) -> list[Any]:
        files, _ = self.store.refresh()
        self.snapshot = fs.snapshot(files)
        return files

    def _record(self, write) -> None:
        if self.run.recorded:
            write(self.session.notebook)

    def _step_extras(self, action_output: Any, reports: list[ExecutionReport]) -> StepExtras:
        """Images the step's code produced, files it created or changed (downloaded), a lost-session notice."""
        extras = StepExtras()
        images = [image for report in reports for image in report.result.images]
        if images:
            directory = self.store.new_dir("step")
            for index, image in enumerate(images):
                path = directory / f"output-{index + 1}.{(image.format or 'png').lower()}"
                path.write_bytes(image.data)
                extras.images.append(str(path))
        elif is_image(action_output):
            path = self.store.new_dir("step") / "output-1.png"
            action_output.save(path)
            extras.images.append(str(path))
        if any(report.session_lost for report in reports):
            extras.notice = SESSION_LOST_NOTICE
        before = self.snapshot
        files = self._publish_listing()
        sizes = {f.name: f.size for f in files}
        for name in fs.changed_names(before, self.snapshot):
            if (sizes.get(name) or 0) > ATTACH_LIMIT_BYTES:
                continue
            try:
                local = self.store.fetch(name)
            except Exception as exc:
                log.warning("could not fetch %s for the chat: %s", name, exc)
                continue
            if local.suffix.lower() in IMAGE_SUFFIXES and not extras.images:
                extras.images.append(str(local))
            else:
                extras.files.append(str(local))
        return extras

    def _final_extras(self, output: Any) -> StepExtras | None:
        raw = output.to_raw() if hasattr(output, "to_raw") else output
        if not is_image(raw):
            return None
        path = self.store.new_dir("answer") / "answer.png"
        raw.save(path)
        return StepExtras(images=[str(path)])
