"""One browser session = one agent + one executor (one sandbox session) + one temp dir; a registry keyed by Gradio's
session hash, with cleanup when the tab closes, on "New session", and after idle time.

The sandbox identifier is generated here (uuid4); nothing a client sends is ever used as one. Only the model
client is shared between sessions.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playground.backend import Backend
from playground.models import ModelCatalog
from playground.settings import Settings
from playground.steps import Totals

if TYPE_CHECKING:
    from smolagents import CodeAgent

log = logging.getLogger(__name__)

AGENT_INSTRUCTIONS = """\
Your code runs in a persistent, sandboxed Python session (like a Jupyter kernel): variables and imports survive
between steps. The user's files are in /mnt/data; save every file you create there, so the user can download it.
pandas, numpy and matplotlib are available. To show a plot, draw it with matplotlib and end the code with
plt.show(); the user sees the image. Keep printed output short."""

REAPER_INTERVAL = 30.0


@dataclass
class RunHandle:
    """One run of one session: its worker thread, its own stop flag and why it was stopped."""

    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # "user": the Stop button (the run says so in the chat); "closed": tab closed / New session

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class UserSession:
    """Everything that belongs to one browser tab. Runs are serialized by `run_lock`."""

    def __init__(self, key: str, backend: Backend, catalog: ModelCatalog, settings: Settings) -> None:
        self.key = key
        self.session_id = str(uuid.uuid4())
        self.backend = backend
        self.catalog = catalog
        self.settings = settings
        self.tmpdir = Path(tempfile.mkdtemp(prefix="playground-"))
        self.executor = backend.new_executor(self.session_id, settings.execution_timeout)
        self.agent: CodeAgent | None = None
        self.agent_model_key: str | None = None
        self.model_key: str = catalog.default_key
        self.totals = Totals()
        self.last_used = time.monotonic()
        self.run = RunHandle()
        self.run_lock = threading.Lock()
        self.closed = False
        self._counter = 0
        self._counter_lock = threading.Lock()

    @property
    def short_id(self) -> str:
        return self.session_id.split("-")[0]

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def new_dir(self, prefix: str) -> Path:
        """A fresh directory under the session's temp dir (keeps original file names unique per use)."""
        with self._counter_lock:
            self._counter += 1
            number = self._counter
        path = self.tmpdir / f"{prefix}-{number}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def agent_for(self, model_key: str, user_token: str | None = None) -> CodeAgent | None:
        """The session's agent for `model_key` (None for "No model"). Switching models keeps the conversation."""
        model = self.catalog.model(model_key, user_token)
        self.model_key = model_key
        if model is None:
            return None
        if self.agent is not None and self.agent_model_key == model_key and self.agent.model is model:
            return self.agent
        from rich.console import Console
        from smolagents import CodeAgent
        from smolagents.monitoring import AgentLogger, LogLevel

        agent = CodeAgent(
            tools=[],
            model=model,
            executor=self.executor,
            additional_authorized_imports=["*"],
            instructions=AGENT_INSTRUCTIONS,
            max_steps=self.settings.max_steps,
            stream_outputs=callable(getattr(model, "generate_stream", None)),
            # quiet: smolagents' live streaming display ignores the level and would print every run to stdout
            logger=AgentLogger(level=LogLevel.OFF, console=Console(quiet=True)),
        )
        if self.agent is not None:
            agent.memory.steps = list(self.agent.memory.steps)
        self.agent, self.agent_model_key = agent, model_key
        return agent

    def interrupt(self, reason: str = "closed") -> None:
        """Ask the current run to stop: the UI is freed at once, the agent ends at its next step boundary."""
        if not self.run.stop.is_set():
            self.run.reason = reason
        self.run.stop.set()
        if self.agent is not None:
            self.agent.interrupt()

    def close(self, wait: float = 0.0) -> None:
        """Stop any run, delete the sandbox session and the temp dir. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.interrupt()
        if self.run.thread is not None and wait:
            self.run.thread.join(wait)
        try:
            self.executor.cleanup()
        except Exception as exc:  # the sandbox expires on its own after the pool's cooldown anyway
            log.warning("could not delete sandbox session %s: %s", self.short_id, exc)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class SessionRegistry:
    """Sessions by Gradio session hash. Closing happens in a background thread so a handler never waits for it."""

    def __init__(self, backend: Backend, catalog: ModelCatalog, settings: Settings) -> None:
        self.backend, self.catalog, self.settings = backend, catalog, settings
        self._sessions: dict[str, UserSession] = {}
        self._expired: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> UserSession:
        """The session of this browser tab, created on first use."""
        if not key:
            raise ValueError("no browser session")
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = UserSession(key, self.backend, self.catalog, self.settings)
        session.touch()
        return session

    def peek(self, key: str) -> UserSession | None:
        return self._sessions.get(key)

    def pop_expired_notice(self, key: str) -> bool:
        """True once if this tab's previous session was closed for being idle."""
        with self._lock:
            if key in self._expired:
                self._expired.discard(key)
                return True
            return False

    def close(self, key: str, *, expired: bool = False) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
            if expired and session is not None:
                self._expired.add(key)
        if session is not None:
            self._close_later(session)

    def reset(self, key: str) -> UserSession:
        """ "New session": the old agent and sandbox go away, a fresh one takes their place."""
        self.close(key)
        return self.get(key)

    def _close_later(self, session: UserSession) -> None:
        session.interrupt()
        wait = self.settings.execution_timeout + 30
        threading.Thread(target=session.close, args=(wait,), name="playground-close", daemon=True).start()

    def reap_idle(self, now: float | None = None) -> int:
        """Close sessions idle for longer than the configured time (never one that is running)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                key
                for key, session in self._sessions.items()
                if now - session.last_used > self.settings.idle_timeout and not session.run.alive()
            ]
        for key in idle:
            self.close(key, expired=True)
        return len(idle)

    def start_reaper(self, interval: float = REAPER_INTERVAL) -> None:
        if self._reaper is not None:
            return

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.reap_idle()
                except Exception:  # pragma: no cover - keep the reaper alive whatever happens
                    log.exception("idle session reaper failed")

        self._reaper = threading.Thread(target=loop, name="playground-reaper", daemon=True)
        self._reaper.start()

    def close_all(self, wait: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close(wait)


def user_token_from(oauth_token: Any) -> str | None:
    """The Hugging Face access token of a signed-in Space user (gr.OAuthToken), if any."""
    return getattr(oauth_token, "token", None) or None
