"""A browser tab of the playground at the protocol level (bench/visitor.py) that also reads what the page shows:
the chat's answer to a message (the streamed diffs applied, as Gradio's client does), the file list, the status
line, and the page's other actions by their elem_id (New session, the file browser, the exports)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bench.visitor import EventRun, Visitor

NO_MODEL_LABEL = "No model: run my message as Python"


@dataclass
class Reply:
    """What one event did: its wall time, whether it completed, and what the page shows afterwards."""

    seconds: float
    completed: bool  # Gradio reported the event completed successfully
    answer: str  # the chat's messages after the last user message (text only)
    error: str = ""  # Gradio's error for a failed event, or the exception that ended the request

    @property
    def ok(self) -> bool:
        return self.completed and not self.error


class Tab(Visitor):
    """One tab: `say(code)` runs a message in "No model" mode and returns the chat's answer."""

    def __init__(
        self, url: str, config: dict[str, Any], session_hash: str | None = None, address: str | None = None
    ) -> None:
        super().__init__(url, config, {"X-Forwarded-For": address} if address else None)
        if session_hash is not None:  # a request that reuses another tab's Gradio session hash
            self.session_hash = session_hash
        self.no_model = next((value for label, value in self._choices("model-picker") if label == NO_MODEL_LABEL),
                             "none")  # fmt: skip

    def _choices(self, elem_id: str) -> list[Any]:
        try:
            return self.components[self._component(elem_id)]["props"].get("choices") or []
        except StopIteration:
            return []

    def say(self, text: str, files: list[Any] | None = None) -> Reply:
        """Send a chat message in "No model" mode (the text runs as Python) and wait for the run to end."""
        message = {"text": text, "files": list(files or [])}
        return self.act("chat-input", "submit", **{"chat-input": message, "model-picker": self.no_model})

    def act(self, elem_id: str, event_name: str, event_data: Any = None, **values: Any) -> Reply:
        """Trigger an event and read the page afterwards; a refused or broken request is a failed reply."""
        start = time.perf_counter()
        try:
            run = self.trigger(elem_id, event_name, event_data, **values)
        except Exception as exc:  # the server went away, refused the request, or timed out
            return Reply(time.perf_counter() - start, False, "", f"{type(exc).__name__}: {exc}"[:300])
        return Reply((run.completed or time.perf_counter()) - run.sent, run.success, self._answer(), _error(run))

    def new_session(self) -> Reply:
        return self.act("new-session", "click")

    def select_file(self, name: str, row: int = 0) -> Reply:
        """Click a file's row in the file browser (what the page sends for a Dataframe select)."""
        columns = ["", name, "", ""]
        data = {"index": [row, 1], "value": name, "row_value": columns, "col_value": [name], "selected": True}
        return self.act("file-list", "select", data)

    def value(self, elem_id: str) -> Any:
        value = self.values.get(self._component(elem_id))
        if isinstance(value, dict) and value.get("__type__") == "update":
            return value.get("value")
        return value

    def file_names(self) -> list[str]:
        table = self.value("file-list") or {}
        return [str(row[1]) for row in table.get("data", []) if len(row) > 1] if isinstance(table, dict) else []

    def _answer(self) -> str:
        """The chat's text after the last user message."""
        chat = self.value("chatbot") or []
        last_user = max((i for i, m in enumerate(chat) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
        return "\n".join(_text(m.get("content")) for m in chat[last_user + 1 :] if isinstance(m, dict))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part) for part in content)
    if isinstance(content, dict) and isinstance(content.get("file"), dict):
        return "📎 " + str(content["file"].get("path") or "")
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or content.get("path") or content.get("url") or "")
    return ""


def _error(run: EventRun) -> str:
    if run.completed is None:
        return "the event never completed"
    if run.success:
        return ""
    for line in reversed(run.stream):
        message = json.loads(line[5:])
        if message.get("msg") == "process_completed":
            output = message.get("output") or {}
            return str(output.get("error") or message.get("title") or "the event failed")[:300]
    return "the event failed"
