"""What one user message does, in a worker thread: wait for the previous run, upload the attachments, then run the
agent (or the message itself as Python), posting typed messages to its `Run` as it goes.

The worker owns every slow call (uploads, model start-up, LLM calls, sandbox executions, file listings); pages only
read the run's transcript, so none of them blocks, and a page that goes away never closes smolagents' own stream
(which would hit its "generator ignored GeneratorExit" bug).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradio import ChatMessage
from smolagents.memory import ActionStep, FinalAnswerStep
from smolagents.utils import AgentError

from azure_sessions import SESSION_LOST_NOTICE, ExecutionReport
from azure_sessions.errors import PoolFullError
from azure_sessions.executor import CodeExecutionError, execution_error_of, sessions_error_of
from playground import files as fs
from playground.formatting import fence, human_size, markdown_escape, plural
from playground.model_catalog import NO_MODEL, ModelUnavailableError
from playground.runs import (
    CANNOT_INTERRUPT,
    INTERRUPTED,
    AgentEvent,
    Ended,
    Failed,
    LiveOutput,
    OutputMode,
    PythonDone,
    PythonStarted,
    Queued,
    Refused,
    Run,
    Started,
    Stopped,
    Uploaded,
)
from playground.settings import IMAGE_MAX_BYTES
from playground.steps import (
    IMAGE_SUFFIXES,
    PythonAnswer,
    StepExtras,
    is_image,
    stderr_before,
    strip_code_fences,
)
from playground.visitors import CapReached, RunSlots

if TYPE_CHECKING:
    from playground.sessions import UserSession

log = logging.getLogger(__name__)

ATTACH_LIMIT_BYTES = 25 * 1024 * 1024  # bigger new files are listed in the browser but not attached to the chat
ATTACH_MAX_FILES = 10  # new files offered in the chat per step; the others are in the file browser
IMAGES_PER_STEP = 10
IMAGE_MAX_PIXELS = 40_000_000
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
    *,
    slots: RunSlots | None = None,
    uploaded: Callable[[Sequence[str]], None] | None = None,
) -> Run:
    """Add a run for the message to the session's conversation and start its worker thread (it first waits for the
    session's previous run to settle, then for a slot in `slots`). `uploaded(paths)` is told once the attachments
    are in the sandbox (the server's copies may go). Pages follow the session to see it; tests can wait on
    `run.settled`."""
    agent_mode = model_key != NO_MODEL
    run = session.begin_run(user_messages(text, paths, as_code=not agent_mode), agent_mode, tab)
    run.thread = threading.Thread(
        target=_Worker(session, run, slots, uploaded),
        args=(text, list(paths), model_key, user_token),
        name=f"run-{session.short_id}",
        daemon=True,
    )
    run.thread.start()
    return run


class _Worker:
    """The body of a run's thread; talks to the page only through `run.post`. Files go through the session's store
    (which publishes the listing to every tab); the agent, the notebook and the totals are the session's."""

    def __init__(
        self,
        session: UserSession,
        run: Run,
        slots: RunSlots | None = None,
        uploaded: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.session, self.run = session, run
        self.store = session.store
        self.slots, self.uploaded = slots, uploaded
        self.snapshot: fs.Snapshot = {}
        self.reports: list[ExecutionReport] = []
        self.interrupted = False  # an execution of this run ended in a KeyboardInterrupt
        self.service_full = False  # the sandbox service had no sandbox to give (a full pool): the run ends

    def __call__(self, text: str, paths: Sequence[str], model_key: str, user_token: str | None) -> None:
        visitor = self.session.visitor
        slot = False
        try:
            if self.run.previous is not None:
                self.run.previous.settled.wait()
            if self.slots is not None and not self.run.stop.is_set():
                slot = self.slots.acquire(visitor, self.run.stop.is_set, lambda why: self.run.post(Queued(why)))
            if self.run.stop.is_set():
                self.run.post(Stopped("It was stopped before it started; nothing ran."))
                return
            self.run.post(Started())
            self._run(text, paths, model_key, user_token)
        except CapReached as exc:
            self.run.post(Refused(exc.message))
        except ModelUnavailableError as exc:
            self.run.post(Failed(str(exc)))
        except Exception as exc:  # shown in the chat; the page never gets a stack trace
            if isinstance(sessions_error_of(exc), PoolFullError):
                self.run.post(Refused(fs.SERVICE_FULL))
            else:
                log.exception("run failed")
                self.run.post(Failed(f"{type(exc).__name__}: {exc}"))
        finally:
            if slot and self.slots is not None:
                self.slots.release(visitor)
            if self.uploaded is not None and paths:
                self.uploaded(paths)
            self.run.post(Ended())

    def _run(self, text: str, paths: Sequence[str], model_key: str, user_token: str | None) -> None:
        uploaded: list[str] = []
        if paths:
            uploaded, refused = self.store.upload(paths)
            self.run.post(Uploaded(uploaded, refused))
            if self.uploaded is not None:
                self.uploaded(paths)
            self._publish_listing()
        self.session.notebook.user(text, [Path(p).name for p in paths], agent_mode=model_key != NO_MODEL)
        if model_key == NO_MODEL:
            if text.strip():  # files alone are just uploaded
                self._run_python(text)
        else:
            task = compose_task(text, uploaded, self.session.take_sandbox_reset())
            self._run_agent(task, model_key, user_token)

    # ---- the two modes -------------------------------------------------------------------------------------------
    def _run_agent(self, task: str, model_key: str, user_token: str | None) -> None:
        agent = self.session.agent_for(model_key, user_token)
        executor = self.store.executor
        self._publish_listing()
        removers = self._listen(executor)
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
                    if isinstance(sessions_error_of(event.error), PoolFullError):
                        self.service_full = True  # the model would only try again, and again
                        agent.interrupt()
                elif isinstance(event, FinalAnswerStep):
                    extras = self._final_extras(event.output)
                    self._record(lambda book, output=event.output: book.final_answer(output))
                self.run.post(AgentEvent(event, extras))
        except AgentError as exc:
            raised = execution_error_of(exc)
            if self.service_full:
                pass  # said below
            elif self.run.stop.is_set() or (raised is not None and raised.interrupted):
                self.run.post(Stopped(self._stop_detail()))
                self._record(lambda book: book.note("The run was stopped."))
            else:
                self.run.post(Failed(str(exc)))
        finally:
            for remove in removers:
                remove()
        if self.service_full:
            self.run.post(Refused(fs.SERVICE_FULL))

    def _run_python(self, text: str) -> None:
        executor = self.store.executor
        code = strip_code_fences(text)
        self.run.post(PythonStarted(code))
        self._publish_listing()
        removers = self._listen(executor)
        started = time.monotonic()
        answer, output = PythonAnswer(), None
        try:
            code_output = executor.run_code_raise_errors(code)
            output = code_output.output
            result = None if output is None or is_image(output) else str(output)
            answer = PythonAnswer(logs=code_output.logs or "", result=result)
        except CodeExecutionError as exc:  # the code raised: what it printed, then its error
            logs = exc.result.stdout + stderr_before(exc.result, exc.error)
            answer = PythonAnswer(logs=logs, error=exc.error)
        except AgentError as exc:  # not the code's own failure (its final answer could not be read...)
            answer = PythonAnswer(problem=str(exc))
        finally:
            for remove in removers:
                remove()
        duration = time.monotonic() - started
        self.session.totals.steps += 1
        self.session.totals.seconds += duration
        reports = self._take_reports()
        extras = self._step_extras(output, reports)
        self._record(lambda book: [book.cell(report) for report in reports])
        self.run.post(PythonDone(dataclasses.replace(answer, duration=duration), extras))
        if self.run.stop.is_set():
            self.run.post(Stopped(self._stop_detail()))

    def _listen(self, executor: Any) -> list[Callable[[], None]]:
        """Hear the executions of this run: each one's report when it ends, and what it prints while it runs (shown
        in its block at once where the sandbox streams it; otherwise the block says when it comes)."""
        self.run.post(OutputMode(executor.supports_live_output is not False))
        return [
            executor.add_listener(self._collect),
            executor.add_output_listener(lambda stream, text: self.run.post(LiveOutput(stream, text))),
        ]

    def _collect(self, report: ExecutionReport) -> None:
        self.reports.append(report)
        if report.error is not None and report.error.interrupted:
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
        """Images the step's code produced, files it created or changed (downloaded, within bounds), a lost-session
        notice; what is not kept is said in a note."""
        extras = StepExtras()
        images = [image for report in reports for image in report.result.images]
        if images:
            directory = self.store.new_dir("step")
            for index, image in enumerate(images[:IMAGES_PER_STEP]):
                path = directory / f"output-{index + 1}.{(image.format or 'png').lower()}"
                if len(image.data) > IMAGE_MAX_BYTES:
                    extras.note(f"Image {index + 1} ({human_size(len(image.data))}) is too large to show here "
                                f"(the limit is {human_size(IMAGE_MAX_BYTES)}); save it to /mnt/data to download it.")  # fmt: skip
                    continue
                try:
                    extras.images.append(str(self.store.write(path, image.data)))
                except fs.TooLarge as exc:
                    extras.note(f"Image {index + 1} is not shown: {exc.message}.")
            if len(images) > IMAGES_PER_STEP:
                extras.note(f"{plural(len(images) - IMAGES_PER_STEP, 'more image')} not shown here: a step shows "
                            f"at most {IMAGES_PER_STEP}.")  # fmt: skip
        elif is_image(action_output):
            self._save_image(action_output, self.store.new_dir("step") / "output-1.png", extras)
        if any(report.session_lost for report in reports):
            extras.note(SESSION_LOST_NOTICE)
        before = self.snapshot
        files = self._publish_listing()
        self._attach_new_files(fs.changed_names(before, self.snapshot), {f.name: f.size for f in files}, extras)
        return extras

    def _attach_new_files(self, names: list[str], sizes: dict[str, Any], extras: StepExtras) -> None:
        """Offer the step's new files in the chat: at most ATTACH_MAX_FILES, each at most ATTACH_LIMIT_BYTES; the
        others are only in the file browser, and a note says so."""
        left_out = 0
        for name in names:
            if (
                len(extras.files) + len(extras.images) >= ATTACH_MAX_FILES
                or (sizes.get(name) or 0) > ATTACH_LIMIT_BYTES
            ):
                left_out += 1
                continue
            try:
                local = self.store.fetch(name, ATTACH_LIMIT_BYTES, prefix="attached")
            except Exception as exc:
                log.info("not attaching %s to the chat: %s", name, exc)
                left_out += 1
                continue
            if local.suffix.lower() in IMAGE_SUFFIXES and not extras.images:
                extras.images.append(str(local))
            else:
                extras.files.append(str(local))
        if left_out:
            extras.note(f"{plural(left_out, 'more new file')} {'is' if left_out == 1 else 'are'} in /mnt/data: "
                        "download them from the file browser.")  # fmt: skip

    def _save_image(self, image: Any, path: Any, extras: StepExtras) -> None:
        """A PIL image (a value the code returned) saved for the chat, unless it is too large to keep."""
        width, height = image.size
        if width * height > IMAGE_MAX_PIXELS:
            extras.note(f"The image ({width}×{height} pixels) is too large to show here; save it to /mnt/data.")
            return
        image.save(path)
        extras.images.append(str(path))

    def _final_extras(self, output: Any) -> StepExtras | None:
        raw = output.to_raw() if hasattr(output, "to_raw") else output
        if not is_image(raw):
            return None
        extras = StepExtras()
        self._save_image(raw, self.store.new_dir("answer") / "answer.png", extras)
        return extras
