"""One browser = one session: an agent, an executor (one sandbox session), a temp dir, the conversation and its
notebook. `BrowserSessions` finds a session by the browser's secret key and keeps it across reloads until it is idle.

The browser keeps a random key (256 bits, made here) in its local storage; the server keeps only the key's SHA-256,
mapped to the session, so neither the key nor the sandbox identifier (a separate uuid4, made here too) is ever
taken from what a client sends. Tabs of one browser share the key, and so the session; each tab keeps its own file
selection. Only the model client is shared between sessions.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradio import ChatMessage

from azure_sessions import InterruptNotSupportedError, SessionsError
from playground.backend import Backend
from playground.changes import Changes
from playground.files import FileStore
from playground.model_catalog import ModelCatalog
from playground.notebook import NotebookLog
from playground.runs import CANNOT_INTERRUPT, INTERRUPTED, Run
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

IDLE_NOTICE = (
    "⏱ Your previous session was closed after being idle; this is a fresh sandbox (files and variables are gone)."
)
REAPER_INTERVAL = 30.0
INTERRUPT_POLL = 0.1
EXPIRED_KEYS_KEPT = 100_000
_KEY = re.compile(r"[A-Za-z0-9_-]{43}")


def new_key() -> str:
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


class UserSession:
    """Everything that belongs to one browser. `changed` is notified whenever something a page shows changes; `store`
    holds its sandbox's files and the listing the pages show."""

    def __init__(self, digest: str, backend: Backend, catalog: ModelCatalog, settings: Settings) -> None:
        self.digest = digest
        self.backend = backend
        self.catalog = catalog
        self.settings = settings
        self.session_id = str(uuid.uuid4())
        self.changed = Changes()  # bumped on every change a page shows
        executor = backend.new_executor(self.session_id, settings.execution_timeout)
        self.store = FileStore(executor, settings.max_upload_bytes, self.changed)
        self.agent: CodeAgent | None = None
        self.agent_model_key: str | None = None
        self.model_key: str = catalog.default_key
        self.totals = Totals()
        self.last_used = time.monotonic()
        self.conversation: list[Run | list[ChatMessage]] = []
        self.notebook = NotebookLog()
        self.closed = False
        self.unclaimed_key: str | None = None  # made before the browser could store it (an event before load)
        self._sandbox_reset = False

    @property
    def short_id(self) -> str:
        return self.session_id.split("-")[0]

    @property
    def executor(self) -> Any:
        return self.store.executor

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def _bump(self) -> None:
        self.changed.bump()

    # ---- the conversation ---------------------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return [item for item in self.conversation if isinstance(item, Run)]

    def unsettled(self) -> list[Run]:
        return [run for run in self.runs() if not run.settled.is_set()]

    def active_run(self) -> Run | None:
        """The run Stop acts on: the one whose code is going, else the latest one waiting for its turn."""
        active = [run for run in self.runs() if run.active]
        return next((run for run in active if run.started), active[-1] if active else None)

    def add_note(self, text: str) -> None:
        with self.changed:
            self.conversation.append([ChatMessage(content=text)])
        self._bump()

    def begin_run(self, user_messages: list[ChatMessage], agent_mode: bool, tab: str) -> Run:
        """A new run, after the latest one that has not settled yet (it waits for it)."""
        with self.changed:
            pending = self.unsettled()
            run = Run(
                user_messages,
                agent_mode,
                self.changed,
                tab=tab,
                previous=pending[-1] if pending else None,
                execution_timeout=self.settings.execution_timeout,
            )
            self.conversation.append(run)
        self._bump()
        return run

    def view(self, now: float | None = None) -> list[ChatMessage]:
        """The whole conversation as the chat shows it, live notes included."""
        now = time.monotonic() if now is None else now
        with self.changed:
            items = list(self.conversation)
        messages: list[ChatMessage] = []
        for item in items:
            messages.extend(item.snapshot(now) if isinstance(item, Run) else item)
        return messages

    def has_timer(self) -> bool:
        return any(run.has_timer() for run in self.runs())

    def offers_reset(self) -> bool:
        """A run's code cannot be interrupted and is still going: the page offers Reset sandbox."""
        return any(run.cannot_interrupt for run in self.runs())

    # ---- the agent ----------------------------------------------------------------------------------------------
    def agent_for(self, model_key: str, user_token: str | None = None) -> CodeAgent | None:
        """The session's agent for `model_key` (None for "No model"). A new model or a new sandbox keeps the
        conversation: the new agent starts with the old one's memory."""
        model = self.catalog.model(model_key, user_token)
        self.model_key = model_key
        if model is None:
            return None
        agent = self.agent
        if (
            agent is not None
            and self.agent_model_key == model_key
            and agent.model is model
            and agent.python_executor is self.executor
        ):
            return agent
        from rich.console import Console
        from smolagents import CodeAgent
        from smolagents.monitoring import AgentLogger, LogLevel

        fresh = CodeAgent(
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
        if agent is not None:
            fresh.memory.steps = list(agent.memory.steps)
        self.agent, self.agent_model_key = fresh, model_key
        return fresh

    def take_sandbox_reset(self) -> bool:
        """True once after Reset sandbox (the next task tells the agent its variables and files are gone)."""
        reset, self._sandbox_reset = self._sandbox_reset, False
        return reset

    # ---- stopping -----------------------------------------------------------------------------------------------
    def stop_run(self) -> Run | None:
        """The Stop button: interrupt the running code where the sandbox can (the local emulator), and end the agent
        at its next step boundary. An Azure pool cannot interrupt: the run says so and the page offers a reset."""
        run = self.active_run()
        if run is None or not run.request_stop():
            return None
        if self.agent is not None:
            self.agent.interrupt()
        threading.Thread(
            target=self._interrupt, args=(run, self.executor), name=f"stop-{self.short_id}", daemon=True
        ).start()
        self._bump()
        return run

    def _interrupt(self, run: Run, executor: Any) -> None:
        """Interrupt whatever code the run starts until it settles (the model may still be writing the step)."""
        while not run.settled.is_set():
            try:
                if executor.interrupt():
                    run.set_interrupt(INTERRUPTED)
            except InterruptNotSupportedError:
                run.set_interrupt(CANNOT_INTERRUPT)
                return
            except SessionsError as exc:
                log.warning("could not interrupt session %s: %s", self.short_id, exc)
            run.settled.wait(INTERRUPT_POLL)

    def reset_sandbox(self) -> None:
        """Reset sandbox: end the running code now by deleting the sandbox session (variables and files are lost),
        and go on with a new one. The conversation and the agent's memory are kept; the agent is told."""
        old = self.executor
        self.session_id = str(uuid.uuid4())
        self.store.executor = self.backend.new_executor(self.session_id, self.settings.execution_timeout)
        self._sandbox_reset = True
        for run in self.unsettled():
            if run.started:  # its code ran in the old sandbox; a run still waiting goes on in the new one
                run.abandon("reset")
        if self.agent is not None:
            self.agent.interrupt()
        threading.Thread(
            target=_delete_sandbox, args=(old, self.short_id), name="playground-reset", daemon=True
        ).start()
        self.store.publish([])

    def close(self, wait: float = 0.0) -> None:
        """End any run, delete the sandbox session and the temp dir. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        runs = self.unsettled()
        for run in runs:
            run.abandon("closed")
        if self.agent is not None:
            self.agent.interrupt()
        _delete_sandbox(self.executor, self.short_id)
        for run in runs:
            if run.thread is not None and wait:
                run.thread.join(wait)
        self.store.remove_scratch()
        self._bump()


def _delete_sandbox(executor: Any, short_id: str) -> None:
    try:
        executor.cleanup()
    except Exception as exc:  # the sandbox expires on its own after the pool's cooldown anyway
        log.warning("could not delete sandbox session %s: %s", short_id, exc)


@dataclass
class Tab:
    """One browser tab: which session it shows, and its own file-browser state."""

    digest: str
    selected: str | None = None  # the file selected in the browser, by name
    pending_delete: str | None = None  # the file the delete confirmation names
    follower: object | None = None  # the page's current follower; an older one stops drawing


@dataclass
class Attachment:
    """What `BrowserSessions.attach` found for a page load."""

    session: UserSession
    key: str | None  # a key the browser must store (new, or replacing an unknown one); None: keep its own


class BrowserSessions:
    """The playground's sessions, one per browser: by browser key (its digest), and tabs by Gradio session hash.
    Closing never blocks a handler."""

    def __init__(self, backend: Backend, catalog: ModelCatalog, settings: Settings) -> None:
        self.backend, self.catalog, self.settings = backend, catalog, settings
        self._sessions: dict[str, UserSession] = {}
        self._tabs: dict[str, Tab] = {}
        self._issued: set[str] = set()  # digests of every key this process handed out
        self._expired: dict[str, None] = {}  # digests whose session was closed for being idle (insertion-ordered)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

    def sessions(self) -> list[UserSession]:
        with self._lock:
            return list(self._sessions.values())

    # ---- pages and tabs -----------------------------------------------------------------------------------------
    def attach(self, tab: str, key: str | None) -> Attachment:
        """A page loads with the key its browser stored (None the first time): the session behind the key, or a
        fresh one (and a fresh key, unless the browser's key is one this process issued)."""
        if not tab:
            raise ValueError("no browser session")
        with self._lock:
            digest = key_digest(key) if isinstance(key, str) and _KEY.fullmatch(key) else None
            store = None
            if digest is None or digest not in self._issued:
                bound = self._tabs.get(tab)
                early = self._sessions.get(bound.digest) if bound else None
                if early is not None and early.unclaimed_key:
                    store, early.unclaimed_key = early.unclaimed_key, None
                else:
                    store = new_key()
                digest = key_digest(store)
                self._issued.add(digest)
            session = self._session(digest)
            self._tabs[tab] = Tab(digest)
        session.touch()
        return Attachment(session, store)

    def session(self, tab: str) -> UserSession:
        """The session a tab shows (a tab that sends an event before its page load finished gets a new one)."""
        if not tab:
            raise ValueError("no browser session")
        with self._lock:
            bound = self._tabs.get(tab)
            if bound is None:
                key = new_key()
                bound = self._tabs[tab] = Tab(key_digest(key))
                self._issued.add(bound.digest)
                session = self._session(bound.digest)
                session.unclaimed_key = key
            else:
                session = self._session(bound.digest)
        session.touch()
        return session

    def _session(self, digest: str) -> UserSession:
        """The key's session, made on first use; one replacing a session closed for being idle says so."""
        session = self._sessions.get(digest)
        if session is None:
            session = self._sessions[digest] = UserSession(digest, self.backend, self.catalog, self.settings)
            if self._expired.pop(digest, 0) is None:
                session.add_note(IDLE_NOTICE)
        return session

    def tab(self, tab: str) -> Tab | None:
        return self._tabs.get(tab)

    def peek(self, tab: str) -> UserSession | None:
        """The tab's session if it has one (never creates)."""
        with self._lock:
            bound = self._tabs.get(tab)
            return self._sessions.get(bound.digest) if bound else None

    def detach(self, tab: str) -> None:
        """The page went away (closed, reloading, or offline): the session stays for its return until idle."""
        with self._lock:
            self._tabs.pop(tab, None)

    def tabs_of(self, session: UserSession) -> list[Tab]:
        with self._lock:
            return [tab for tab in self._tabs.values() if tab.digest == session.digest]

    # ---- ending sessions ----------------------------------------------------------------------------------------
    def reset(self, tab: str) -> UserSession:
        """ "New session": the old agent, sandbox and conversation go away; a fresh session takes the same key."""
        with self._lock:
            old = self.session(tab)
            self._sessions.pop(old.digest, None)
            for bound in self.tabs_of(old):
                bound.selected = bound.pending_delete = None
            fresh = self._session(old.digest)
        self._close_later(old)
        return fresh

    def close(self, digest: str, *, expired: bool = False) -> None:
        with self._lock:
            session = self._sessions.pop(digest, None)
            if expired and session is not None:
                self._expired[digest] = None
                while len(self._expired) > EXPIRED_KEYS_KEPT:
                    self._expired.pop(next(iter(self._expired)))
        if session is not None:
            self._close_later(session)

    def _close_later(self, session: UserSession) -> None:
        threading.Thread(target=session.close, args=(5.0,), name="playground-close", daemon=True).start()

    def reap_idle(self, now: float | None = None) -> int:
        """Close sessions idle for longer than the configured time (never one with a run still going)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                digest
                for digest, session in self._sessions.items()
                if now - session.last_used > self.settings.idle_timeout and not session.unsettled()
            ]
        for digest in idle:
            self.close(digest, expired=True)
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
            self._tabs.clear()
        for session in sessions:
            session.close(wait)


def user_token_from(oauth_token: Any) -> str | None:
    """The Hugging Face access token of a signed-in Space user (gr.OAuthToken), if any."""
    return getattr(oauth_token, "token", None) or None
