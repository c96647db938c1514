"""One browser = one session: an agent, a sandbox (made on first need), a scratch directory, the conversation and its
notebook. `BrowserSessions` finds a session by the browser's secret key, and only by it: every event of a page
carries the key, and a tab (Gradio's session hash) is only the place a key's session is shown.

The browser keeps a random key (made here) in its local storage; the server keeps only the key's SHA-256, mapped to
the session, so neither the key nor the sandbox identifier (a separate uuid4, made here too) is ever taken from what
a client sends. A key proves itself: its second half is an HMAC of its first under a secret of this process, so
"issued here" needs no list of every key. Tabs of one browser share the key, and so the session; each tab keeps its
own file selection. Only the model client is shared between sessions.

What a visitor may hold is bounded here: new sessions per minute, sandboxes (per visitor and in all), and a
sandbox whose last tab closed is given back after a grace (a reload within it finds everything as it was).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradio import ChatMessage

from azure_sessions import InterruptNotSupportedError, SessionsError
from playground.backend import Backend
from playground.changes import Changes
from playground.files import FileStore
from playground.formatting import clip, span
from playground.model_catalog import ModelCatalog
from playground.notebook import NotebookLog
from playground.runs import CANNOT_INTERRUPT, INTERRUPTED, Run
from playground.settings import Settings
from playground.steps import Totals
from playground.uploads import UploadLedger, sweep_partial_uploads
from playground.visitors import LOCAL, CapReached, Holding, NewSessions, RunSlots, SandboxCaps, Visitor

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
OBSERVATION_CHARS = 40_000  # what the agent keeps (and sends its model) of one step's printed output
CONVERSATION_CHARS = 4_000_000  # the text a session's conversation keeps; older runs make room
LINKS_KEPT = 10_000
LINK_LIFETIME = 30 * 60.0
_NONCE, _MAC = 16, 16


class NotYours(PermissionError):
    """An event whose key does not match the session its tab shows (or carries none): nothing is done."""

    message = "This page's session could not be confirmed (its key is missing or belongs elsewhere): reload the page."


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def given_back_text(grace: float) -> str:
    return (
        f"⏱ No tab of this session was open for {span(grace)}, so its sandbox was given back: variables and the "
        "files in /mnt/data are gone. The conversation is kept; your next message starts a fresh sandbox."
    )


class UserSession:
    """Everything that belongs to one browser. `changed` is notified whenever something a page shows changes; `store`
    holds its sandbox and files and the listing the pages show."""

    def __init__(
        self,
        digest: str,
        backend: Backend,
        catalog: ModelCatalog,
        settings: Settings,
        lease: Any,
        scratch_root: Path | None = None,
    ) -> None:
        self.digest = digest
        self.backend = backend
        self.catalog = catalog
        self.settings = settings
        self.session_id = str(uuid.uuid4())  # the identifier of the session's next (or current) sandbox
        self.changed = Changes()  # bumped on every change a page shows
        self.store = FileStore(lambda: lease(self), settings.max_upload_bytes, self.changed, scratch_root)
        self.visitor: Visitor = LOCAL  # who last used it (their share is what it counts against)
        self.agent: CodeAgent | None = None
        self.agent_model_key: str | None = None
        self.model_key: str = catalog.default_key
        self.totals = Totals()
        self.last_used = time.monotonic()
        self.orphaned_at: float | None = None  # when its last tab went away (None: a tab is open)
        self.upload_ticket = secrets.token_urlsafe(24)  # what its pages send with uploads (see gate.py)
        self.conversation: list[Run | list[ChatMessage]] = []
        self.notebook = NotebookLog()
        self.closed = False  # set as closing starts (followers stop drawing)
        self.cleaned = threading.Event()  # set once its sandbox and scratch directory are deleted
        self.unclaimed_key: str | None = None  # made before the browser could store it (an event before load)
        self._sandbox_reset = False
        self._trimmed = 0

    @property
    def short_id(self) -> str:
        return self.session_id.split("-")[0]

    @property
    def executor(self) -> Any:
        """The session's sandbox, made now if it has none (CapReached when the visitor or the server is at a cap)."""
        return self.store.executor

    @property
    def used(self) -> bool:
        """Something happened that a returning page should find: a message, a sandbox."""
        return bool(self.conversation) or self.store.holding

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
            self._trim()
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

    def _trim(self) -> None:
        """Drop the oldest settled runs while the conversation holds more than CONVERSATION_CHARS of text."""
        sizes = [_chars(item) for item in self.conversation]
        total = sum(sizes)
        while total > CONVERSATION_CHARS and self.conversation:
            first = self.conversation[0]
            if isinstance(first, Run) and not first.settled.is_set():
                break
            self.conversation.pop(0)
            total -= sizes.pop(0)
            self._trimmed += 1

    def view(self, now: float | None = None) -> list[ChatMessage]:
        """The whole conversation as the chat shows it, live notes included."""
        now = time.monotonic() if now is None else now
        with self.changed:
            items = list(self.conversation)
            trimmed = self._trimmed
        messages: list[ChatMessage] = []
        if trimmed:
            messages.append(
                ChatMessage(content=f"*The {trimmed} oldest parts of this conversation are no longer shown.*")
            )
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
        executor = self.executor
        agent = self.agent
        if (
            agent is not None
            and self.agent_model_key == model_key
            and agent.model is model
            and agent.python_executor is executor
        ):
            return agent
        from rich.console import Console
        from smolagents import CodeAgent
        from smolagents.monitoring import AgentLogger, LogLevel

        fresh = CodeAgent(
            tools=[],
            model=model,
            executor=executor,
            additional_authorized_imports=["*"],
            instructions=AGENT_INSTRUCTIONS,
            max_steps=self.settings.max_steps,
            stream_outputs=callable(getattr(model, "generate_stream", None)),
            step_callbacks=[clip_step_memory],
            # quiet: smolagents' live streaming display ignores the level and would print every run to stdout
            logger=AgentLogger(level=LogLevel.OFF, console=Console(quiet=True)),
        )
        if agent is not None:
            fresh.memory.steps = list(agent.memory.steps)
        self.agent, self.agent_model_key = fresh, model_key
        return fresh

    def take_sandbox_reset(self) -> bool:
        """True once after the sandbox was replaced (Reset sandbox, or given back after its tabs closed): the next
        task tells the agent its variables and files are gone."""
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
        executor = self.store.current
        if executor is not None:
            threading.Thread(
                target=self._interrupt, args=(run, executor), name=f"stop-{self.short_id}", daemon=True
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
        """Reset sandbox: end the running code now by deleting the sandbox session (variables and files are lost);
        the next need makes a new one. The conversation and the agent's memory are kept; the agent is told."""
        started = [run for run in self.unsettled() if run.started]  # their code ran in the old sandbox
        # The sandbox is taken before those runs are abandoned: a message waiting for them wakes then, and must find
        # the new identifier (and the reset to tell its agent), never lease the old one or run in it.
        taken = self._take_sandbox()
        for run in started:
            run.abandon("reset")
        if self.agent is not None:
            self.agent.interrupt()
        _delete_later(taken)

    def give_back_sandbox(self) -> bool:
        """No tab of the session was open for the grace: its sandbox is deleted (never under a run), the
        conversation kept and a note says so. Returns whether there was a sandbox to give back."""
        if self.unsettled() or not self.store.has_sandbox:
            return False
        _delete_later(self._take_sandbox())
        self.add_note(given_back_text(self.settings.tab_grace))
        return True

    def _take_sandbox(self) -> tuple[Any, str] | None:
        """The session's sandbox, and its short id, taken from it (None when it had none): the next need makes a
        new one under a new identifier."""
        short_id, old = self.short_id, self.store.release()
        self.session_id = str(uuid.uuid4())
        if old is not None:
            self._sandbox_reset = True
        self._bump()
        return (old, short_id) if old is not None else None

    def close(self, wait: float = 0.0) -> None:
        """End any run, delete the sandbox session and the scratch directory. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        runs = self.unsettled()
        for run in runs:
            run.abandon("closed")
        if self.agent is not None:
            self.agent.interrupt()
        old = self.store.release()
        if old is not None:
            _delete_sandbox(old, self.short_id)
        for run in runs:
            if run.thread is not None and wait:
                run.thread.join(wait)
        self.store.remove_scratch()
        self.cleaned.set()
        self._bump()


def _chars(item: Run | list[ChatMessage]) -> int:
    messages = item.snapshot(time.monotonic()) if isinstance(item, Run) else item
    return sum(len(m.content) if isinstance(m.content, str) else 200 for m in messages)


def clip_step_memory(step: Any) -> None:
    """What the agent keeps of a step (and so sends its model next): at most OBSERVATION_CHARS of printed output."""
    if isinstance(getattr(step, "observations", None), str):
        step.observations = clip(step.observations, OBSERVATION_CHARS)


def _delete_later(taken: tuple[Any, str] | None) -> None:
    """Delete a sandbox taken from its session (``UserSession._take_sandbox``) on a thread of its own."""
    if taken is not None:
        threading.Thread(target=_delete_sandbox, args=taken, name="playground-reset", daemon=True).start()


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


@dataclass(frozen=True)
class Link:
    """A download the page offers: one file of /mnt/data, or all of them as a zip (see gate.py)."""

    digest: str
    name: str | None  # None: the files in `names`, zipped
    names: tuple[str, ...] = ()
    made: float = field(default_factory=time.monotonic)


class BrowserSessions:
    """The playground's sessions, one per browser: by browser key (its digest), and tabs by Gradio session hash.
    Closing never blocks a handler."""

    def __init__(
        self, backend: Backend, catalog: ModelCatalog, settings: Settings, scratch_root: Path | None = None
    ) -> None:
        self.backend, self.catalog, self.settings = backend, catalog, settings
        self.scratch_root = scratch_root
        per_visitor = settings.caps_per_visitor
        self.caps = SandboxCaps(
            settings.max_sandboxes, settings.sandboxes_per_visitor, per_visitor, settings.tab_grace
        )
        self.new_sessions = NewSessions(
            settings.new_sessions_per_minute, settings.new_sessions_per_minute_total, per_visitor
        )
        self.slots = RunSlots(settings.concurrency, settings.runs_per_visitor, per_visitor)
        self.uploads = UploadLedger()
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[str, UserSession] = {}
        self._tabs: dict[str, Tab] = {}
        self._tickets: dict[str, str] = {}  # upload ticket -> digest
        self._links: collections.OrderedDict[str, Link] = collections.OrderedDict()
        self._expired: dict[str, None] = {}  # digests whose session was closed for being idle (insertion-ordered)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

    def sessions(self) -> list[UserSession]:
        with self._lock:
            return list(self._sessions.values())

    # ---- keys ---------------------------------------------------------------------------------------------------
    def new_key(self) -> str:
        nonce = secrets.token_bytes(_NONCE)
        mac = hmac.new(self._secret, nonce, hashlib.sha256).digest()[:_MAC]
        return base64.urlsafe_b64encode(nonce + mac).decode("ascii").rstrip("=")

    def issued(self, key: object) -> bool:
        """Whether `key` is one this process made (a forged or foreign key is not)."""
        if not isinstance(key, str) or len(key) != 43:
            return False
        try:
            raw = base64.urlsafe_b64decode(key + "=")
        except (binascii.Error, ValueError):
            return False
        if len(raw) != _NONCE + _MAC:
            return False
        expected = hmac.new(self._secret, raw[:_NONCE], hashlib.sha256).digest()[:_MAC]
        return hmac.compare_digest(raw[_NONCE:], expected)

    # ---- pages and tabs -----------------------------------------------------------------------------------------
    def attach(self, tab: str, key: str | None, visitor: Visitor = LOCAL) -> Attachment:
        """A page loads with the key its browser stored (None the first time): the session behind the key, or a
        fresh one (and a fresh key, unless the browser's key is one this process issued). CapReached when too many
        sessions were started lately; NotYours when the tab already shows another key's session."""
        if not tab:
            raise ValueError("no browser session")
        with self._lock:
            if self.issued(key):
                return Attachment(self._bind(tab, key_digest(key), visitor), None)  # type: ignore[arg-type]
            bound = self._tabs.get(tab)
            if bound is not None:
                early = self._sessions.get(bound.digest)
                if early is None or early.unclaimed_key is None:
                    raise NotYours(NotYours.message)
                store, early.unclaimed_key = early.unclaimed_key, None
                return Attachment(self._bind(tab, bound.digest, visitor), store)
            store = self.new_key()
            return Attachment(self._bind(tab, key_digest(store), visitor), store)

    def session(self, tab: str, key: str | None, visitor: Visitor = LOCAL) -> UserSession:
        """The session of the key an event carries, shown in `tab`. An event before its page's load finished (no
        key, a tab not yet seen) gets a new session that the load then keeps; any other event without the key of
        the session its tab shows is refused (NotYours): a tab's session hash alone reaches nothing."""
        if not tab:
            raise ValueError("no browser session")
        with self._lock:
            if self.issued(key):
                return self._bind(tab, key_digest(key), visitor)  # type: ignore[arg-type]
            if tab in self._tabs:
                raise NotYours(NotYours.message)
            early = self.new_key()
            session = self._bind(tab, key_digest(early), visitor)
            session.unclaimed_key = early
            return session

    def _bind(self, tab: str, digest: str, visitor: Visitor) -> UserSession:
        """Show the key's session in `tab` (made on first use); a tab showing another key's session is refused,
        unless that session was the tab's own early one, never claimed, which the key now replaces."""
        bound = self._tabs.get(tab)
        if bound is not None and bound.digest != digest:
            early = self._sessions.get(bound.digest)
            if early is not None and early.unclaimed_key is None:
                raise NotYours(NotYours.message)
            if early is not None and not early.used:
                self._sessions.pop(early.digest, None)
                self._close_later(early)
            elif early is not None and not [
                t for t in self._tabs.values() if t is not bound and t.digest == early.digest
            ]:
                early.orphaned_at = time.monotonic()  # its grace starts: no tab shows it any more
            bound = None
        session = self._session(digest, visitor)
        if bound is None:
            self._tabs[tab] = Tab(digest)
        session.visitor = visitor
        session.orphaned_at = None
        session.touch()
        return session

    def _session(self, digest: str, visitor: Visitor) -> UserSession:
        """The key's session, made on first use (within the cap on new sessions); one replacing a session closed for
        being idle says so."""
        session = self._sessions.get(digest)
        if session is None:
            self.new_sessions.admit(visitor)
            session = UserSession(digest, self.backend, self.catalog, self.settings, self._lease, self.scratch_root)
            session.visitor = visitor
            self._sessions[digest] = session
            self._tickets[session.upload_ticket] = digest
            if self._expired.pop(digest, 0) is None:
                session.add_note(IDLE_NOTICE)
        return session

    def tab(self, tab: str) -> Tab | None:
        return self._tabs.get(tab)

    def peek(self, tab: str, key: str | None) -> UserSession | None:
        """The session `tab` shows, if `key` is its key (never creates)."""
        with self._lock:
            bound = self._tabs.get(tab)
            if bound is None or not self.issued(key) or bound.digest != key_digest(key):  # type: ignore[arg-type]
                return None
            return self._sessions.get(bound.digest)

    def by_ticket(self, ticket: str | None) -> UserSession | None:
        """The session whose pages send this upload ticket, if one of its tabs is open (or its grace runs)."""
        with self._lock:
            digest = self._tickets.get(ticket or "")
            session = self._sessions.get(digest) if digest else None
            return session if session is not None and not session.closed else None

    def detach(self, tab: str) -> None:
        """The page went away (closed, reloading, or offline): the session stays for its return; once no tab of it
        is open its grace starts (see `reap`)."""
        with self._lock:
            bound = self._tabs.pop(tab, None)
            session = self._sessions.get(bound.digest) if bound else None
            if session is not None and not self.tabs_of(session):
                session.orphaned_at = time.monotonic()

    def tabs_of(self, session: UserSession) -> list[Tab]:
        with self._lock:
            return [tab for tab in self._tabs.values() if tab.digest == session.digest]

    # ---- downloads ----------------------------------------------------------------------------------------------
    def link(self, session: UserSession, name: str | None, names: tuple[str, ...] = ()) -> str:
        """A token for downloading `name` of the session's /mnt/data (None: the files `names`, zipped)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._links[token] = Link(session.digest, name, names)
            while len(self._links) > LINKS_KEPT:
                self._links.popitem(last=False)
        return token

    def follow_link(self, token: str) -> tuple[UserSession, Link] | None:
        with self._lock:
            link = self._links.get(token)
            if link is None or time.monotonic() - link.made > LINK_LIFETIME:
                return None
            session = self._sessions.get(link.digest)
            return (session, link) if session is not None and not session.closed else None

    # ---- sandboxes ----------------------------------------------------------------------------------------------
    def _lease(self, session: UserSession) -> Any:
        """A sandbox for `session`, within the visitor's and the server's caps (CapReached otherwise)."""
        if session.settings.require_login and session.visitor.user is None:
            raise CapReached("Sign in with Hugging Face (the button at the top) to run code in this playground.")
        with self._lock:
            now = time.monotonic()
            self.caps.admit(
                session.visitor,
                (Holding(other.visitor, self._frees_in(other, now)) for other in self._sessions.values()
                 if other is not session and other.store.holding),
            )  # fmt: skip
            return self.backend.new_executor(session.session_id, self.settings.execution_timeout)

    def _frees_in(self, session: UserSession, now: float) -> float | None:
        """Seconds until `session` gives its sandbox back by itself (its tabs' grace, or its idle expiry)."""
        if session.unsettled():
            return None
        if session.orphaned_at is not None:
            return max(0.0, self.settings.tab_grace - (now - session.orphaned_at))
        return max(0.0, self.settings.idle_timeout - (now - session.last_used))

    # ---- ending sessions ----------------------------------------------------------------------------------------
    def reset(self, tab: str, key: str | None, visitor: Visitor = LOCAL) -> UserSession:
        """ "New session": the old agent, sandbox and conversation go away; a fresh session takes the same key."""
        with self._lock:
            old = self.session(tab, key, visitor)
            self._sessions.pop(old.digest, None)
            self._tickets.pop(old.upload_ticket, None)
            for bound in self.tabs_of(old):
                bound.selected = bound.pending_delete = None
            try:
                fresh = self._session(old.digest, visitor)
            except BaseException:
                self._sessions[old.digest] = old
                self._tickets[old.upload_ticket] = old.digest
                raise
            fresh.unclaimed_key = old.unclaimed_key
        self._close_later(old)
        return fresh

    def close(self, digest: str, *, expired: bool = False) -> None:
        with self._lock:
            session = self._sessions.pop(digest, None)
            if session is not None:
                self._tickets.pop(session.upload_ticket, None)
            if expired and session is not None:
                self._expired[digest] = None
                while len(self._expired) > EXPIRED_KEYS_KEPT:
                    self._expired.pop(next(iter(self._expired)))
        if session is not None:
            self._close_later(session)

    def _close_later(self, session: UserSession) -> None:
        def close() -> None:
            session.close(5.0)
            self.uploads.forget(session.digest)

        threading.Thread(target=close, name="playground-close", daemon=True).start()

    def reap(self, now: float | None = None) -> int:
        """Close sessions idle for longer than the configured time; give back the sandbox of a session no tab has
        shown for the grace (a session that never held anything is simply forgotten). Never under a run. Returns
        how many sessions were closed or gave their sandbox back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            items = list(self._sessions.items())
        acted = 0
        for digest, session in items:
            if session.unsettled():
                continue
            if now - session.last_used > self.settings.idle_timeout:
                self.close(digest, expired=True)
                acted += 1
            elif session.orphaned_at is not None and now - session.orphaned_at > self.settings.tab_grace:
                if not session.used:
                    self.close(digest)
                    acted += 1
                elif session.give_back_sandbox():
                    acted += 1
        self.uploads.sweep(now)
        if self.scratch_root is not None:
            sweep_partial_uploads(self.scratch_root)
        return acted

    def start_reaper(self, interval: float | None = None) -> None:
        if self._reaper is not None:
            return
        interval = interval or min(REAPER_INTERVAL, self.settings.tab_grace / 4)

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.reap()
                except Exception:  # pragma: no cover - keep the reaper alive whatever happens
                    log.exception("session reaper failed")

        self._reaper = threading.Thread(target=loop, name="playground-reaper", daemon=True)
        self._reaper.start()

    def close_all(self, wait: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._tabs.clear()
            self._tickets.clear()
        for session in sessions:
            session.close(wait)
            self.uploads.forget(session.digest)


def user_token_from(oauth_token: Any) -> str | None:
    """The Hugging Face access token of a signed-in Space user (gr.OAuthToken), if any."""
    return getattr(oauth_token, "token", None) or None
