"""smolagents stream events -> Gradio chat messages. Pure: no I/O, no session state, unit-tested without a browser.

One `RunRenderer` follows one run. Each agent step is one collapsible "thought" that is *pending* (spinner, open)
while the model thinks and while its code runs, and *done* (closed, with duration and tokens) when the step ends.
Images and files the step produced are separate messages right after it, so they stay visible when it is closed.
The final answer is a normal message.
"""

from __future__ import annotations

import copy
import mimetypes
import re
import time
from dataclasses import dataclass, field
from typing import Any

from gradio import ChatMessage
from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep, ToolCall
from smolagents.models import ChatMessageStreamDelta

from azure_sessions import ExecutionError, ExecutionResult
from azure_sessions.errors import PoolFullError
from azure_sessions.executor import execution_error_of, sessions_error_of
from playground.formatting import MAX_SHOWN_CHARS, clip, fence, format_tokens, joined_cut, markdown_escape, plural

LOGS_MARKER = "Execution logs:\n"
TITLE_ERROR_CHARS = 80
CLOCK_AFTER_SECONDS = 2.0  # a running cell's block shows how long it has run, from this long on
NO_LIVE_OUTPUT = "*Output arrives when the code ends: an Azure session pool does not stream it while it runs.*"
OUTPUT_MARKER = "Last output from code snippet:\n"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg")


@dataclass
class StepExtras:
    """What the session layer found out about a step (by I/O) and wants shown with it."""

    images: list[str] = field(default_factory=list)  # local paths of images to show inline
    files: list[str] = field(default_factory=list)  # local copies of files the step created or changed
    notice: str | None = None  # e.g. "the sandbox was recycled, variables and files were lost"

    def note(self, text: str) -> None:
        """Add a sentence to the step's notice (what was not kept, a recycled sandbox…)."""
        self.notice = f"{self.notice}\n\n{text}" if self.notice else text


@dataclass
class Totals:
    """Running totals of one browser session, shown in the session panel."""

    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def add_step(self, step: ActionStep | PlanningStep) -> None:
        self.steps += 1 if isinstance(step, ActionStep) else 0
        usage = getattr(step, "token_usage", None)
        if usage is not None:
            self.input_tokens += usage.input_tokens or 0
            self.output_tokens += usage.output_tokens or 0
        duration = step.timing.duration if step.timing else None
        self.seconds += duration or 0.0


_CODE_OPEN = re.compile(r"<code>|```(?:python|py)?[ \t]*\n")
_CODE_CLOSE = re.compile(r"</code>|```")


def split_model_output(text: str) -> tuple[str, str | None]:
    """(thought, code) from a CodeAgent reply, also while it is still streaming (code may be unfinished)."""
    match = _CODE_OPEN.search(text)
    if not match:
        return _strip_thought(text), None
    code = text[match.end() :]
    end = _CODE_CLOSE.search(code)
    if end:
        code = code[: end.start()]
    return _strip_thought(text[: match.start()]), code.strip("\n")


def _strip_thought(text: str) -> str:
    text = text.strip()
    return text[len("Thought:") :].strip() if text.startswith("Thought:") else text


def split_observations(observations: str | None) -> tuple[str, str | None]:
    """(logs, last output) from smolagents' "Execution logs:\\n…Last output from code snippet:\\n…" string."""
    text = observations or ""
    if text.startswith(LOGS_MARKER):
        text = text[len(LOGS_MARKER) :]
    logs, sep, output = text.partition(OUTPUT_MARKER)
    return logs, (output if sep else None)


def step_body(thought: str, code: str | None, logs: str = "", output: str | None = None, error: str = "") -> str:
    """The markdown inside a step: thought, code as a Python block, logs, last output, error with traceback."""
    parts = []
    if thought:
        parts.append(clip(thought))
    if code is not None:
        parts.append(fence(clip(code), "python"))
    if logs.strip():
        parts.append("**Output**\n" + fence(clip(logs), "text"))
    if output is not None and output.strip() and output.strip() != "None":
        parts.append("**Result**\n" + fence(clip(output), "text"))
    if error:
        parts.append("**Error**\n" + fence(clip(error), "text"))
    return "\n\n".join(parts) or "…"


def _fit(label: str) -> str:
    """A label cut to fit a step's title."""
    return label if len(label) <= TITLE_ERROR_CHARS else label[: TITLE_ERROR_CHARS - 1] + "…"


def failure_labels(error: BaseException) -> tuple[str, str]:
    """(a failed step's title, what the run ended on) for a step's error: the exception its code raised
    ("interrupted" for Stop or its timeout), a full sandbox service, else the agent error itself (the model wrote no
    code, the service failed...)."""
    raised = execution_error_of(error)
    if raised is not None:
        return ("interrupted" if raised.interrupted else _fit(raised.label)), _fit(raised.label)
    if isinstance(sessions_error_of(error), PoolFullError):
        return "sandbox service full", "a full sandbox service"
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    label = _fit(f"{type(error).__name__}: {first}" if first else type(error).__name__)
    return label, label


def stderr_before(result: ExecutionResult, error: ExecutionError) -> str:
    """What the code wrote to stderr before its traceback (warnings), which the error's traceback leaves out."""
    at = result.stderr.find(error.traceback) if error.traceback else -1
    return result.stderr[:at] if at > 0 else ""


class LiveText:
    """What running code printed so far, bounded like every output the chat shows: its head and its latest tail,
    around a note of how much was cut between them."""

    def __init__(self, limit: int = MAX_SHOWN_CHARS) -> None:
        self._half = limit // 2
        self.head, self.tail, self.total = "", "", 0

    def add(self, text: str) -> None:
        self.total += len(text)
        if len(self.head) < self._half:
            taken = text[: self._half - len(self.head)]
            self.head += taken
            text = text[len(taken) :]
        if text:
            self.tail = (self.tail + text)[-self._half :]

    def __bool__(self) -> bool:
        return self.total > 0

    def __str__(self) -> str:
        return joined_cut(self.head, self.total - len(self.head) - len(self.tail), self.tail)


def file_content(path: str) -> dict:
    """A chat file message's content (with its MIME type, so the chat labels it properly)."""
    mime, _ = mimetypes.guess_type(path)
    return {"path": path, "mime_type": mime} if mime else {"path": path}


def attachment_messages(extras: StepExtras | None) -> list[ChatMessage]:
    """Images inline, then files as downloadable attachments, then a notice, each as its own message."""
    if extras is None:
        return []
    messages = []
    if extras.notice:
        messages.append(ChatMessage(content=f"⚠️ {extras.notice}"))
    if extras.images:
        messages.append(ChatMessage(content=[file_content(path) for path in extras.images]))
    if extras.files:
        messages.append(ChatMessage(content=[file_content(path) for path in extras.files]))
    return messages


def is_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Image.Image)


def final_answer_text(output: Any) -> str:
    text = str(getattr(output, "to_string", lambda: output)()) if output is not None else "(no answer)"
    return "**Final answer**\n\n" + clip(text)


class RunRenderer:
    """Follows one run; `messages` holds the run's chat messages, updated in place as events arrive."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.current: ChatMessage | None = None  # the pending step message
        self.step_number = 0
        self.streamed = ""
        self.code: str | None = None
        self._seen: list[ActionStep] = []
        self.is_stopped = False
        self.answered = False
        self.last_error: tuple[int, str, str] | None = None  # (step, what it ended on, error) of a failed last step
        self.direct = False  # "No model": the message itself is the code
        self.live_output = True  # the sandbox shows output while the code runs (False: an Azure pool)
        self.live = LiveText()  # what the running code printed so far
        self.running_since: float | None = None  # when the running code started (monotonic), while it runs

    # ---- agent runs ---------------------------------------------------------------------------------------------
    def begin_step(self, step_number: int | None = None) -> ChatMessage:
        self.step_number = step_number or self.step_number + 1
        self.streamed, self.code = "", None
        self._code_ended()
        self.current = ChatMessage(
            content="…", metadata={"title": f"Step {self.step_number} · thinking…", "status": "pending"}
        )
        self.messages.append(self.current)
        return self.current

    def first_step(self) -> None:
        """The agent starts: its first step goes pending (unless one already is)."""
        if self.current is None:
            self.begin_step(1)

    def on_event(self, event: Any, extras: StepExtras | None = None) -> None:
        if isinstance(event, ChatMessageStreamDelta):
            self._on_delta(event)
        elif isinstance(event, ToolCall):
            self._on_tool_call(event)
        elif isinstance(event, ActionStep):
            self._on_action_step(event, extras)
        elif isinstance(event, PlanningStep):
            self._on_planning_step(event)
        elif isinstance(event, FinalAnswerStep):
            self._on_final_answer(event, extras)
        # ActionOutput carries nothing the finished ActionStep does not

    def _pending(self) -> ChatMessage:
        return self.current if self.current is not None else self.begin_step()

    def _on_delta(self, delta: ChatMessageStreamDelta) -> None:
        if not delta.content:
            return
        message = self._pending()
        self.streamed += delta.content
        thought, code = split_model_output(self.streamed)
        message.content = step_body(thought, code)

    def _on_tool_call(self, call: ToolCall) -> None:
        message = self._pending()
        self.code = str(call.arguments)
        message.metadata["title"] = f"Step {self.step_number} · running code…"
        self._code_started(message)

    # ---- the running code's output, as it comes ----------------------------------------------------------------
    def _code_started(self, message: ChatMessage) -> None:
        self.live, self.running_since = LiveText(), time.monotonic()
        message.content = self._running_body()

    def _code_ended(self) -> None:
        self.live, self.running_since = LiveText(), None

    def _running_body(self) -> str:
        thought, _ = split_model_output(self.streamed)
        body = step_body(thought, self.code, str(self.live))
        return body if self.live_output else f"{body}\n\n{NO_LIVE_OUTPUT}"

    def output(self, text: str) -> None:
        """What the running code wrote (stdout or stderr), shown in its block until the step's result replaces it."""
        if self.current is None or self.running_since is None or not text:
            return
        self.live.add(text)
        self.current.content = self._running_body()

    def set_live_output(self, live: bool) -> None:
        """Whether the sandbox shows output while code runs; without it the running block says when it comes."""
        self.live_output = live
        if self.current is not None and self.running_since is not None:
            self.current.content = self._running_body()

    def view(self, now: float) -> list[ChatMessage]:
        """Copies of the messages, the running code's block titled with how long it has run."""
        messages = copy.deepcopy(self.messages)
        if self.running_since is None or now - self.running_since < CLOCK_AFTER_SECONDS:
            return messages
        at = next((i for i, message in enumerate(self.messages) if message is self.current), None)
        if at is not None:
            title = str(messages[at].metadata.get("title", "")).removesuffix("…")
            messages[at].metadata["title"] = f"{title} · {now - self.running_since:.0f} s"
        return messages

    def _on_action_step(self, step: ActionStep, extras: StepExtras | None) -> None:
        if any(seen is step for seen in self._seen):  # smolagents re-yields the last step after max_steps
            return
        self._seen.append(step)
        message = self._pending()
        thought, parsed_code = split_model_output(step.model_output or self.streamed or "")
        code = step.code_action if step.code_action is not None else parsed_code
        logs, output = split_observations(step.observations)
        error = str(step.error) if step.error is not None else ""
        if step.is_final_answer or is_image(step.action_output):
            output = None  # the answer gets its own message; an image is shown inline, not as its repr
        self._code_ended()
        message.content = step_body(thought, code, logs, output, error)
        number = step.step_number or self.step_number
        title = f"Step {number}"
        self.last_error = None
        if step.error is not None:
            label, ended_on = failure_labels(step.error)
            title += " · " + label
            self.last_error = (number, ended_on, error)
        elif step.is_final_answer:
            title += " · final answer"
        message.metadata = {"title": title, "status": "done"}
        if step.timing and step.timing.duration is not None:
            message.metadata["duration"] = round(step.timing.duration, 2)
        usage = step.token_usage
        tokens = format_tokens(usage.input_tokens, usage.output_tokens) if usage else ""
        if tokens:
            message.metadata["log"] = tokens
        self.current = None
        self.messages.extend(attachment_messages(extras))
        if not step.is_final_answer:
            self.begin_step((step.step_number or self.step_number) + 1)

    def _on_planning_step(self, step: PlanningStep) -> None:
        message = self._pending()
        message.content = clip(step.plan.strip())
        message.metadata = {"title": "Plan", "status": "done"}
        if step.timing and step.timing.duration is not None:
            message.metadata["duration"] = round(step.timing.duration, 2)
        self.current = None
        self.begin_step(self.step_number)

    def _on_final_answer(self, step: FinalAnswerStep, extras: StepExtras | None) -> None:
        self._drop_empty_pending()
        self.answered = True
        if extras and extras.images and not isinstance(step.output, str):
            self.messages.append(ChatMessage(content="**Final answer**"))
            self.messages.extend(attachment_messages(extras))
            return
        self.messages.append(ChatMessage(content=final_answer_text(step.output)))
        self.messages.extend(attachment_messages(extras))

    def _drop_empty_pending(self) -> None:
        if self.current is not None and not self.streamed and self.code is None:
            if self.current in self.messages:
                self.messages.remove(self.current)
            self.current = None

    def note(self, text: str) -> None:
        """A plain message at this point of the run: before the pending step, if there is one."""
        at = len(self.messages) - (1 if self.current is not None else 0)
        self.messages.insert(max(0, at), ChatMessage(content=text))

    # ---- endings ------------------------------------------------------------------------------------------------
    def _close_pending(self, suffix: str) -> None:
        if self.current is None:
            return
        if self.direct:  # "No model": the code is in the user's message; what it printed so far stays
            self.current.metadata = {"title": f"Python · {suffix}", "status": "done"}
            if not self.live and self.current in self.messages:
                self.messages.remove(self.current)
        elif not self.streamed and self.code is None and self.current.content == "…":
            self.messages.remove(self.current)
        else:
            self.current.metadata = {"title": f"Step {self.step_number} · {suffix}", "status": "done"}
        self.current = None
        self._code_ended()

    def stopped(self, detail: str = "The agent stopped; the session keeps its variables and files.") -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        self._close_pending("stopped")
        self.messages.append(ChatMessage(content=f"**Stopped.** {detail}"))

    def refused(self, text: str) -> None:
        """The run could not start or go on (a cap was reached, the sandbox service is full): the sentence, as a
        plain message (it says it all: the last step's error is not repeated after it)."""
        self._close_pending("not run")
        self.last_error = None
        self.messages.append(ChatMessage(content=f"⚠️ {text}"))

    def failed(self, error: BaseException | str) -> None:
        self._close_pending("failed")
        self.messages.append(ChatMessage(content="⚠️ **The run failed.**\n\n" + fence(clip(str(error)), "text")))

    def finish(self) -> None:
        """The run is over: a last step that failed, with no answer after it, stays readable outside its block."""
        self._close_pending("ended")
        if self.answered or self.is_stopped or self.last_error is None:
            return
        number, label, error = self.last_error
        tail = "\n".join(error.strip().splitlines()[-12:])
        self.messages.append(
            ChatMessage(content=f"⚠️ **The run ended on {label}** (step {number}).\n\n" + fence(clip(tail), "text"))
        )

    # ---- "No model": the message itself is the code -------------------------------------------------------------
    def direct_start(self, code: str) -> None:
        self.direct, self.code = True, code
        self.current = ChatMessage(
            content="", metadata={"title": "Python · running in the sandbox…", "status": "pending"}
        )
        self.messages.append(self.current)
        self._code_started(self.current)

    def direct_done(self, answer: PythonAnswer, extras: StepExtras | None = None) -> None:
        """The message's output, result and error are the answer: a plain message, readable without a click. It
        replaces the running block and the output shown there."""
        if self.current is not None and self.current in self.messages:
            self.messages.remove(self.current)
        self.current = None
        self._code_ended()
        self.messages.append(ChatMessage(content=python_answer(answer, extras)))
        self.messages.extend(attachment_messages(extras))


@dataclass(frozen=True)
class PythonAnswer:
    """What a "No model" message produced: what it printed, its value, the exception it raised (`error`), or a
    failure that did not come from the code (`problem`, a sentence), and how long it ran."""

    logs: str = ""
    result: str | None = None
    error: ExecutionError | None = None
    problem: str = ""
    duration: float | None = None


def python_answer(answer: PythonAnswer, extras: StepExtras | None = None) -> str:
    """What a "No model" message produced, as markdown: its printed output, its value, its error with traceback;
    when there is none of those, what it showed below instead (a plot, files) or that it produced nothing."""
    parts = []
    logs, result, error, duration = answer.logs, answer.result, answer.error, answer.duration
    if logs.strip():
        parts.append(fence(clip(logs), "text"))
    if result is not None and result.strip() and result.strip() != "None":
        parts.append("**Result**\n" + fence(clip(result), "text"))
    if error is not None:
        first = next((line.strip() for line in error.value.splitlines() if line.strip()), "")
        head = f"⚠️ **{error.name or 'Error'}**" + (f": {markdown_escape(first)}" if first else "")
        parts.append(head + ("\n" + fence(clip(error.traceback), "text") if error.traceback.strip() else ""))
    if answer.problem:
        parts.append("⚠️ **Error**\n" + fence(clip(answer.problem), "text"))
    produced = ((extras.images, "image"), (extras.files, "file")) if extras else ()
    shown = [plural(len(items), noun) for items, noun in produced if items]
    if not parts:
        parts.append(f"✓ Done: {' and '.join(shown)} below." if shown else "✓ Done, no output.")
    if duration is not None:
        parts.append(f"*Python · {duration:.2f} s*")
    return "\n\n".join(parts)


def strip_code_fences(text: str) -> str:
    """A message typed in "No model" mode may be wrapped in ```python fences; run what is inside."""
    _, code = split_model_output(text) if "```" in text else ("", None)
    return code if code is not None else text
