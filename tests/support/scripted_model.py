"""A deterministic smolagents model for tests: replays canned replies, never touches the network."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from smolagents.models import ChatMessage, ChatMessageStreamDelta, MessageRole, Model
from smolagents.monitoring import TokenUsage

Responder = Callable[[list], str]


def code_reply(code: str, thought: str = "I will run some code.") -> str:
    """A CodeAgent reply in smolagents' default `<code>` format."""
    return f"Thought: {thought}\n<code>\n{code}\n</code>"


def last_user_text(messages: Sequence) -> str:
    """The text of the most recent user/task message (what the scripted model reacts to)."""
    for message in reversed(messages):
        role = getattr(message, "role", None) or message.get("role")
        if str(role).lower().endswith("user"):
            content = getattr(message, "content", None) if not isinstance(message, dict) else message.get("content")
            if isinstance(content, list):
                return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


class ScriptedModel(Model):
    """Replays `replies` in order (a list of strings), or asks `responder(messages)` for each reply.

    Streams each reply in a few chunks with an optional delay per chunk, so a UI can show text arriving.
    Records every call's messages in `calls`. Thread-safe.
    """

    def __init__(
        self,
        replies: Sequence[str] | None = None,
        *,
        responder: Responder | None = None,
        chunk_delay: float = 0.0,
        model_id: str = "scripted-test-model",
    ) -> None:
        super().__init__(model_id=model_id)
        if (replies is None) == (responder is None):
            raise ValueError("give exactly one of replies= or responder=")
        self._replies = list(replies or [])
        self._responder = responder
        self._lock = threading.Lock()
        self._index = 0
        self.chunk_delay = chunk_delay
        self.calls: list[list] = []

    def _next_reply(self, messages: list) -> str:
        with self._lock:
            self.calls.append(list(messages))
            if self._responder is not None:
                return self._responder(list(messages))
            if self._index >= len(self._replies):
                raise RuntimeError("ScriptedModel ran out of replies")
            reply = self._replies[self._index]
            self._index += 1
            return reply

    @staticmethod
    def _usage(reply: str) -> TokenUsage:
        return TokenUsage(input_tokens=100, output_tokens=max(1, len(reply) // 4))

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        reply = self._next_reply(messages)
        return ChatMessage(role=MessageRole.ASSISTANT, content=reply, token_usage=self._usage(reply))

    def generate_stream(
        self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs
    ) -> Iterator[ChatMessageStreamDelta]:
        reply = self._next_reply(messages)
        step = max(1, len(reply) // 4)
        for start in range(0, len(reply), step):
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
            yield ChatMessageStreamDelta(content=reply[start : start + step])
        yield ChatMessageStreamDelta(content="", token_usage=self._usage(reply))
