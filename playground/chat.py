"""One user message, run for one session: uploads, then the agent (or the message as Python) in a worker thread.

The worker owns every slow call (uploads, model start-up, LLM calls, sandbox executions, file diffs). The generator
that Gradio iterates only reads the worker's queue, so it never blocks for long: Stop frees the page at once, and
abandoning it never closes smolagents' own stream (which would hit the "generator ignored GeneratorExit" bug).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradio import ChatMessage
from smolagents.memory import ActionStep, FinalAnswerStep
from smolagents.utils import AgentError

from playground import files as fs
from playground.models import NO_MODEL, ModelUnavailableError
from playground.sessions import RunHandle, UserSession
from playground.steps import IMAGE_SUFFIXES, RunRenderer, StepExtras, file_content, is_image, strip_code_fences

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
ATTACH_LIMIT_BYTES = 25 * 1024 * 1024  # bigger new files are listed in the browser but not attached to the chat


@dataclass
class Update:
    """What a yield of the run changes: the run's chat messages, and the /mnt/data listing when it changed."""

    messages: list[ChatMessage]
    files: list[Any] | None = None
    finished: bool = False


def user_messages(text: str, paths: Sequence[str]) -> list[ChatMessage]:
    messages = []
    if text.strip():
        messages.append(ChatMessage(role="user", content=text))
    if paths:
        messages.append(ChatMessage(role="user", content=[file_content(str(p)) for p in paths]))
    return messages


def compose_task(text: str, uploaded: Sequence[str]) -> str:
    task = text.strip() or "Have a look at the attached files and tell me what they contain."
    if uploaded:
        listing = "\n".join(f"- /mnt/data/{name}" for name in uploaded)
        task += f"\n\nFiles attached to this message (already uploaded to /mnt/data):\n{listing}"
    return task


class _Worker:
    """The body of the worker thread; talks to the generator only through `out`."""

    def __init__(self, session: UserSession, handle: RunHandle, previous: RunHandle, out: queue.Queue) -> None:
        self.session, self.handle, self.previous, self.out = session, handle, previous, out
        self.snapshot: fs.Snapshot = {}
        self._last_files: list[Any] = []

    def put(self, *item: Any) -> None:
        self.out.put(item)

    def __call__(self, text: str, paths: Sequence[str], model_key: str, user_token: str | None) -> None:
        try:
            if self.previous.thread is not None:
                self.previous.thread.join()
                self.put("ready")
            with self.session.run_lock:
                uploaded: list[str] = []
                if paths:
                    uploaded, refused = fs.upload(self.session, paths)
                    self.put("uploaded", uploaded, refused, self._listing())
                if self.handle.stop.is_set():
                    return
                if model_key == NO_MODEL:
                    if text.strip():  # files alone are just uploaded
                        self._run_python(text)
                else:
                    self._run_agent(compose_task(text, uploaded), model_key, user_token)
        except ModelUnavailableError as exc:
            self.put("failed", str(exc))
        except Exception as exc:  # shown in the chat; the page never gets a stack trace
            log.exception("run failed")
            self.put("failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.put("end")

    def _listing(self) -> list[Any]:
        files, _ = fs.list_files(self.session)
        self.snapshot = fs.snapshot(files)
        return files

    def _run_agent(self, task: str, model_key: str, user_token: str | None) -> None:
        agent = self.session.agent_for(model_key, user_token)
        executor = self.session.executor
        self._listing()
        stream = agent.run(task, stream=True, reset=False)
        if self.handle.stop.is_set():
            agent.interrupt()
        marks = (executor.last_result, executor.session_resets)
        try:
            for event in stream:
                extras = None
                if isinstance(event, ActionStep):
                    self.session.totals.add_step(event)
                    extras, marks = self._step_extras(event.action_output, marks)
                    self.put("files", self._last_files)
                elif isinstance(event, FinalAnswerStep):
                    extras = self._final_extras(event.output)
                self.put("event", event, extras)
        except AgentError as exc:
            if self.handle.stop.is_set() or "interrupted" in str(exc).lower():
                self.put("stopped")
            else:
                self.put("failed", str(exc))

    def _run_python(self, text: str) -> None:
        executor = self.session.executor
        code = strip_code_fences(text)
        self.put("python", code)
        self._listing()
        marks = (executor.last_result, executor.session_resets)
        started = time.monotonic()
        logs, result, error, output = "", None, "", None
        try:
            code_output = executor.run_code_raise_errors(code)
            logs, output = code_output.logs or "", code_output.output
            result = None if output is None or is_image(output) else str(output)
        except AgentError as exc:
            error = str(exc)
        duration = time.monotonic() - started
        self.session.totals.steps += 1
        self.session.totals.seconds += duration
        extras, _ = self._step_extras(output, marks)
        self.put("files", self._last_files)
        self.put("python-done", code, logs, result, error, duration, extras)

    def _step_extras(self, action_output: Any, marks: tuple[Any, int]) -> tuple[StepExtras, tuple[Any, int]]:
        """Images the step's code returned, files it created or changed (downloaded), a lost-session notice."""
        executor = self.session.executor
        last_result, resets = marks
        extras = StepExtras()
        directory: Path | None = None
        result = executor.last_result
        if result is not None and result is not last_result and getattr(result, "images", None):
            directory = self.session.new_dir("step")
            for index, image in enumerate(result.images):
                path = directory / f"output-{index + 1}.{(image.format or 'png').lower()}"
                path.write_bytes(image.data)
                extras.images.append(str(path))
        elif is_image(action_output):
            directory = self.session.new_dir("step")
            path = directory / "output-1.png"
            action_output.save(path)
            extras.images.append(str(path))
        if executor.session_resets > resets:
            from azure_sessions import SESSION_LOST_NOTICE

            extras.notice = SESSION_LOST_NOTICE
        before = self.snapshot
        files = self._last_files = self._listing()
        sizes = {f.name: f.size for f in files}
        for name in fs.changed_names(before, self.snapshot):
            if (sizes.get(name) or 0) > ATTACH_LIMIT_BYTES:
                continue
            try:
                local = fs.fetch(self.session, name)
            except Exception as exc:
                log.warning("could not fetch %s for the chat: %s", name, exc)
                continue
            if local.suffix.lower() in IMAGE_SUFFIXES and not extras.images:
                extras.images.append(str(local))
            else:
                extras.files.append(str(local))
        return extras, (executor.last_result, executor.session_resets)

    def _final_extras(self, output: Any) -> StepExtras | None:
        raw = output.to_raw() if hasattr(output, "to_raw") else output
        if not is_image(raw):
            return None
        path = self.session.new_dir("answer") / "answer.png"
        raw.save(path)
        return StepExtras(images=[str(path)])


def run_message(
    session: UserSession, text: str, paths: Sequence[str], model_key: str, user_token: str | None = None
) -> Iterator[Update]:
    """Start the run in a worker thread and yield the run's messages as they change (first yield: at once)."""
    previous, handle = session.run, RunHandle()
    session.run = handle
    out: queue.Queue = queue.Queue()
    renderer = RunRenderer()
    if previous.alive():
        renderer.waiting("The stopped run is finishing its current step; yours starts right after it.")
    elif model_key != NO_MODEL:
        renderer.begin_step(1)
    worker = _Worker(session, handle, previous, out)
    handle.thread = threading.Thread(
        target=worker, args=(text, list(paths), model_key, user_token), name=f"run-{session.short_id}", daemon=True
    )
    handle.thread.start()
    yield Update(renderer.messages)
    finished = False
    while not finished:
        if handle.stop.is_set():
            # Stop button: say so at once (the agent ends at its step boundary in the background). A closed tab or
            # "New session" draws nothing more: the page is gone or has been emptied.
            if handle.reason == "user":
                renderer.stopped()
                yield Update(renderer.messages, None, True)
            return
        try:
            items = [out.get(timeout=POLL_SECONDS)]
        except queue.Empty:
            continue
        while True:
            try:
                items.append(out.get_nowait())
            except queue.Empty:
                break
        files = None
        for item in items:
            listing = _apply(renderer, item, model_key)
            files = listing if listing is not None else files
            finished = finished or item[0] == "end"
        if handle.stop.is_set():
            continue
        session.touch()
        yield Update(renderer.messages, files, finished)


def _apply(renderer: RunRenderer, item: tuple, model_key: str) -> list[Any] | None:
    """Apply one worker message to the renderer; returns a new file listing when there is one."""
    kind, *args = item
    if kind == "ready":  # the previous (stopped) run has ended: replace the waiting note by this run's first step
        if renderer.current is not None and renderer.current.metadata.get("title") == "Waiting…":
            renderer.messages.remove(renderer.current)
            renderer.current = None
            if model_key != NO_MODEL:
                renderer.begin_step(1)
    elif kind == "uploaded":
        uploaded, refused, listing = args
        report = fs.upload_report(uploaded, refused)
        if report:
            renderer.messages.insert(max(0, len(renderer.messages) - 1), ChatMessage(content=report))
        return listing
    elif kind == "event":
        renderer.on_event(*args)
    elif kind == "files":
        return args[0]
    elif kind == "python":
        renderer.direct_start(args[0])
    elif kind == "python-done":
        renderer.direct_done(*args)
    elif kind == "stopped":
        renderer.stopped()
    elif kind == "failed":
        renderer.failed(args[0])
    return None
