"""One run of one session: the worker thread posts small typed messages; the run keeps its own transcript.

The transcript lives here, not in a page's event handler, so a page that reloads (or a second tab of the same
browser) can follow a run that another page started. Whoever follows asks for a `snapshot`: copies of the messages,
plus the live notes whose timers tick (waiting for a previous run, stopping code that cannot be interrupted, code
running for a while). Live output comes in many small messages; the pages that follow coalesce their redraws.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gradio import ChatMessage

from playground.changes import Changes
from playground.files import upload_report
from playground.steps import PythonAnswer, RunRenderer, StepExtras


# ---- what the worker thread tells its run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    """The previous run has settled; this one begins (its first step goes pending)."""


@dataclass(frozen=True)
class Uploaded:
    """The message's files: those now in /mnt/data, and one sentence for each that was refused."""

    names: Sequence[str]
    refused: Sequence[str]


@dataclass(frozen=True)
class AgentEvent:
    """One event of the agent's stream, with the images, files and notice its step produced."""

    event: Any  # a smolagents stream event
    extras: StepExtras | None = None


@dataclass(frozen=True)
class PythonStarted:
    """ "No model": the message, as code, is sent to the sandbox."""

    code: str


@dataclass(frozen=True)
class PythonDone:
    """ "No model": what the code printed, its value, its error (with the traceback) and how long it took."""

    answer: PythonAnswer
    extras: StepExtras | None = None


@dataclass(frozen=True)
class OutputMode:
    """Whether the sandbox shows the running code's output as it comes (`live`), or only when the code ends (an
    Azure pool): then the running block says so."""

    live: bool


@dataclass(frozen=True)
class LiveOutput:
    """A piece of what the running code wrote to `stream` ("stdout" or "stderr"), shown in its block until the
    step's (or the message's) result replaces it."""

    stream: str
    text: str


@dataclass(frozen=True)
class Queued:
    """The run waits for a slot (the visitor's, or the server's): `reason` says why, in a sentence."""

    reason: str


@dataclass(frozen=True)
class Stopped:
    """The run stopped, or was stopped before it started; `detail` says how its code ended."""

    detail: str


@dataclass(frozen=True)
class Failed:
    """The run could not go on (the model could not start, the service failed); `error` says why."""

    error: str


@dataclass(frozen=True)
class Refused:
    """The run could not start: the visitor or the server is at a cap; `text` says what to do."""

    text: str


@dataclass(frozen=True)
class Ended:
    """The worker is done; nothing more will be posted."""


RunMessage = (
    Started | Queued | Uploaded | AgentEvent | PythonStarted | PythonDone | OutputMode | LiveOutput | Stopped | Failed
    | Refused | Ended
)  # fmt: skip


# How a stop request fared: still trying, the code was interrupted, or the sandbox cannot interrupt.
INTERRUPTING, INTERRUPTED, CANNOT_INTERRUPT = "interrupting", "interrupted", "cannot-interrupt"


@dataclass
class Run:
    """One user message and what it did. `changed` is notified on every change, for the pages that follow."""

    user_messages: list[ChatMessage]
    agent_mode: bool
    changed: Changes
    tab: str = ""  # the browser tab that sent the message
    previous: Run | None = None  # the run this one waits for
    execution_timeout: float = 120.0
    renderer: RunRenderer = field(default_factory=RunRenderer)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # "user": Stop; "closed": New session, idle expiry; "reset": Reset sandbox
    stop_requested_at: float | None = None
    interrupt: str = ""
    settled: threading.Event = field(default_factory=threading.Event)  # worker ended, or the run was abandoned
    started: bool = False
    queued: str = ""  # why the run waits for a slot, while it does
    queued_at: float | None = None
    recorded: bool = True  # whether the run may still add to the session's notebook
    _final: list[ChatMessage] | None = None  # the settled run's messages, copied once

    # ---- the worker's side ------------------------------------------------------------------------------------------
    def post(self, message: RunMessage) -> None:
        with self.changed:
            if self.reason in ("closed", "reset"):
                return  # abandoned: the transcript stays as it was when the sandbox went away
            _apply(self.renderer, message, self.agent_mode)
            if isinstance(message, Queued):
                self.queued, self.queued_at = message.reason, self.queued_at or time.monotonic()
            if isinstance(message, Started):
                self.started, self.queued = True, ""
            if isinstance(message, Ended):
                self.renderer.finish()
                self.settled.set()
            self.changed.bump()

    # ---- the page's side --------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Running and not asked to stop."""
        return not self.settled.is_set() and not self.stop.is_set()

    @property
    def cannot_interrupt(self) -> bool:
        return not self.settled.is_set() and self.interrupt == CANNOT_INTERRUPT

    def request_stop(self) -> bool:
        """The Stop button: mark the run as stopping. Returns False when it was already asked to stop."""
        with self.changed:
            if self.stop.is_set():
                return False
            self.reason = "user"
            self.stop_requested_at = time.monotonic()
            self.interrupt = INTERRUPTING
            self.stop.set()
            self.changed.bump()
            return True

    def abandon(self, reason: str) -> None:
        """The sandbox goes away under the run ("reset": Reset sandbox; "closed": New session, idle expiry): its
        transcript is frozen as it is, and whoever waits for it goes on at once."""
        with self.changed:
            self.stop.set()
            if self.reason in ("closed", "reset"):
                return
            self.reason = reason
            self.stop_requested_at = self.stop_requested_at or time.monotonic()
            self.recorded = False
            if not self.settled.is_set() and reason == "reset":
                self.renderer.stopped(
                    "Reset sandbox ended the running code by deleting the sandbox session: its variables and the "
                    "files in /mnt/data are gone. The conversation is kept."
                )
            self.settled.set()
            self.changed.bump()

    def set_interrupt(self, outcome: str) -> None:
        with self.changed:
            self.interrupt = outcome
            self.changed.bump()

    def has_timer(self) -> bool:
        """A live note with a ticking clock is shown (the page redraws it every second)."""
        if self.settled.is_set():
            return False
        return (
            self.stop.is_set()
            or self._waiting()
            or (bool(self.queued) and not self.started)
            or self.renderer.running_since is not None  # the running code's block counts its seconds
        )

    def _waiting(self) -> bool:
        return not self.started and self.previous is not None and not self.previous.settled.is_set()

    def snapshot(self, now: float) -> list[ChatMessage]:
        """Copies of the run's messages (the worker keeps changing the originals), with the live notes. A settled
        run no longer changes: its copy is made once."""
        with self.changed:
            if self._final is not None:
                return list(self._final)
            messages = [*copy.deepcopy(self.user_messages), *self.renderer.view(now)]
            if self.settled.is_set():
                self._final = messages
                return list(messages)
            return messages + self._notes(now)

    def _notes(self, now: float) -> list[ChatMessage]:
        if self.settled.is_set():
            return []
        if self.stop.is_set() and self.reason == "user":
            return [_pending(f"Stopping · {now - (self.stop_requested_at or now):.0f} s", self._stopping_text())]
        if self._waiting() and self.previous is not None:
            waited = now - (self.previous.stop_requested_at or now)
            return [_pending(f"Waiting · {waited:.0f} s", self._waiting_text(self.previous))]
        if self.queued and not self.started:
            return [_pending(f"Waiting · {now - (self.queued_at or now):.0f} s", self.queued)]
        return []

    def _stopping_text(self) -> str:
        if self.interrupt == CANNOT_INTERRUPT:
            return cannot_interrupt_text(self.execution_timeout)
        return "Interrupting the running code…"

    def _waiting_text(self, previous: Run) -> str:
        if not previous.stop.is_set():
            return "A run sent from another tab of this browser is still going; yours starts when it ends."
        text = "The stopped run's code is still running in the sandbox; yours starts when it ends."
        if previous.interrupt == CANNOT_INTERRUPT:
            text += "\n\n" + RESET_HINT
        return text


RESET_HINT = (
    "**Reset sandbox** ends it now by deleting the sandbox session: variables and the files in /mnt/data are lost "
    "(the conversation is kept)."
)


def cannot_interrupt_text(timeout: float) -> str:
    return (
        "This sandbox (an Azure session pool) cannot interrupt code that is running: it goes on until it finishes or "
        f"reaches its {timeout:g} s limit, and the agent stops right after it.\n\n" + RESET_HINT
    )


def _pending(title: str, text: str) -> ChatMessage:
    return ChatMessage(content=text, metadata={"title": title, "status": "pending"})


def _apply(renderer: RunRenderer, message: RunMessage, agent_mode: bool) -> None:
    match message:
        case Started():
            if agent_mode:
                renderer.first_step()
        case Queued():
            pass
        case Uploaded(names=names, refused=refused):
            report = upload_report(names, refused)
            if report:
                renderer.note(report)
        case AgentEvent(event=event, extras=extras):
            renderer.on_event(event, extras)
        case PythonStarted(code=code):
            renderer.direct_start(code)
        case PythonDone(answer=answer, extras=extras):
            renderer.direct_done(answer, extras)
        case OutputMode(live=live):
            renderer.set_live_output(live)
        case LiveOutput(text=text):
            renderer.output(text)
        case Stopped(detail=detail):
            renderer.stopped(detail)
        case Failed(error=error):
            renderer.failed(error)
        case Refused(text=text):
            renderer.refused(text)
        case Ended():
            pass
