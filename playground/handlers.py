"""Gradio event handlers: small functions that find the caller's session and delegate to chat/files/sessions.

Each handler returns (or yields) named updates: a dict from an output name ("chat", "files", "status", …) to the
new value, holding only what changes. Each handler declares the names it may update (`@outputs`), and ui.py wires
them to its components from that declaration.

Every event of a page carries the browser's key (the `key` input), and the key alone decides whose session an event
touches: a tab's Gradio session hash only says where the session is shown. No handler accepts an identifier.
Handlers that start work return at once; `follow` (async, holding no thread) then redraws the page until the
session's runs have settled.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import gradio as gr

from playground import files as fs
from playground.backend import Backend
from playground.chat import run_message, user_messages
from playground.compat import forget_gradio_session
from playground.examples import example_message
from playground.formatting import format_tokens, human_size, markdown_escape, plural, shown_name
from playground.model_catalog import NO_MODEL, ModelCatalog
from playground.notebook import write_notebook
from playground.preview import WHOLE_FILE_BYTES, Preview, Source, preview_source
from playground.sessions import BrowserSessions, NotYours, Tab, UserSession, user_token_from
from playground.settings import Settings
from playground.visitors import CapReached, Visitor, signed_in_user, visitor_of

log = logging.getLogger(__name__)

Updates = dict[str, Any]
Handler = TypeVar("Handler", bound=Callable[..., Any])

FILE_SELECTION = ("status", "download", "download_link", "delete", "confirm", "preview_note", "preview_table",
                  "preview_image", "preview_text")  # fmt: skip
"""What a change of the file selection may update (see `_selection_updates`)."""
FOLLOWING = ("chat", "box", "panel", "reset", "files", *FILE_SELECTION)
"""What following a session's runs may update (see `Handlers.follow`)."""

NO_FILES_HINT = "Drop files on the chat box or use Upload; select a row to preview, download or delete it."
FOLLOW_WAIT = 0.5  # how often a follower looks for a newer follower or a closed tab
TIMER_TICK = 1.0
REDRAW_INTERVAL = 0.25  # a burst of changes (live output, the model's tokens) redraws a page at most this often
ZIP_MAX_BYTES = 512 * 1024 * 1024  # what "All files (.zip)" streams at most (by the listed sizes)
ZIP_MAX_FILES = 2000


def outputs(*names: str) -> Callable[[Handler], Handler]:
    """Declare the page parts a handler's updates may name; ui.py wires the handler to exactly these."""

    def declare(handler: Handler) -> Handler:
        handler.outputs = names  # type: ignore[attr-defined]
        return handler

    return declare


def idle_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(submit_btn=True, stop_btn=False, interactive=True)


def busy_box(clear: bool) -> gr.MultimodalTextbox:
    if clear:
        return gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True, interactive=True)
    return gr.MultimodalTextbox(submit_btn=False, stop_btn=True, interactive=True)


class Handlers:
    """The playground's behaviour, independent of the layout in ui.py."""

    def __init__(self, settings: Settings, backend: Backend, catalog: ModelCatalog, scratch_root: Any = None) -> None:
        self.settings, self.backend, self.catalog = settings, backend, catalog
        self.registry = BrowserSessions(backend, catalog, settings, scratch_root)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _visitor(self, request: gr.Request) -> Visitor:
        return visitor_of(request, self.settings.trust_forwarded_for, signed_in_user(request))

    def _session(self, key: str | None, request: gr.Request) -> UserSession:
        """The session of the key the event carries; on a server that runs no code, or when the key does not match
        the tab, or a cap is reached, the action says why instead (a toast)."""
        if self.backend.refusal:
            raise _toast(f"This server runs no code. {self.backend.refusal}", "No sandbox")
        try:
            return self.registry.session(request.session_hash, key, self._visitor(request))
        except NotYours as exc:
            raise _toast(str(exc), "Reload the page") from None
        except CapReached as exc:
            raise _toast(exc.message, "Not now") from None

    def _tab(self, key: str | None, request: gr.Request) -> tuple[UserSession, Tab]:
        session = self._session(key, request)  # binds the tab if it was not yet
        tab = self.registry.tab(request.session_hash)
        assert tab is not None
        return session, tab

    def panel(self, session: UserSession | None, model_key: str | None = None) -> str:
        """The session panel: backend, short session id, API version, model and running totals (HTML)."""
        model = self.catalog.resolve(model_key or (session.model_key if session else None))
        totals = session.totals if session else None
        tokens = format_tokens(totals.input_tokens, totals.output_tokens) if totals else ""
        rows = [
            ("Backend", html.escape(self.backend.description)),
            ("Session", f"<code>{session.short_id}</code>" if session else "–"),
            ("API version", f"<code>{html.escape(self.backend.effective_api_version)}</code>"),
            ("Model", html.escape(model.label)),
            ("Steps", str(totals.steps if totals else 0)),
            ("Tokens", tokens or "0"),
            ("Time", f"{totals.seconds:.1f} s" if totals else "0.0 s"),
        ]
        body = "".join(f'<div class="kv-key">{k}</div><div class="kv-val" data-key="{k}">{v}</div>' for k, v in rows)
        note = f'<div class="kv-note">{html.escape(model.note)}</div>' if model.note else ""
        return f'<div class="kv">{body}</div>{note}'

    # ---- page load / unload -------------------------------------------------------------------------------------
    @outputs("chat", "box", "panel", "model", "key", "ticket", "reset", "files", *FILE_SELECTION)
    def load(self, key: str | None, request: gr.Request) -> Updates:
        """The page (re)loads: the browser's session, its conversation and files (`follow` then follows a run in
        progress)."""
        if self.backend.refusal:  # no sandbox: nothing to attach to
            return {"panel": self.panel(None)}
        try:
            attachment = self.registry.attach(request.session_hash, key, self._visitor(request))
        except (NotYours, CapReached) as exc:
            text = exc.message if isinstance(exc, CapReached) else str(exc)
            return {"chat": [gr.ChatMessage(content=f"⚠️ {text}")], "panel": self.panel(None)}
        session = attachment.session
        tab = self.registry.tab(request.session_hash)
        first: Updates = {"chat": session.view(), "panel": self.panel(session), "model": session.model_key}
        if attachment.key is not None:
            first["key"] = attachment.key
        first["ticket"] = session.upload_ticket
        if session.used:
            session.store.refresh()
        first["files"] = fs.table(session.store.files)
        first["reset"] = gr.Button(visible=session.offers_reset())
        if tab is not None:
            first.update(self._file_updates(session, tab))
        first["box"] = busy_box(clear=False) if session.active_run() is not None else idle_box()
        return first

    def unload(self, request: gr.Request) -> None:
        self.registry.detach(request.session_hash)
        forget_gradio_session(request)

    # ---- chat ---------------------------------------------------------------------------------------------------
    @outputs("chat", "box")
    def submit(
        self,
        message: dict | None,
        model_key: str,
        key: str | None,
        request: gr.Request,
        oauth_token: gr.OAuthToken | None = None,
    ) -> Updates:
        """Start a run for the message (after the session's unsettled runs); `follow` then draws it. A message that
        cannot run (too long, a cap reached) stays in the box and the chat says why."""
        text = str((message or {}).get("text") or "")
        paths = [str(p) for p in (message or {}).get("files") or []]
        if self.backend.refusal:
            refusal = gr.ChatMessage(role="assistant", content=f"This server runs no code. {self.backend.refusal}")
            return {"chat": [*user_messages(text[:2000], [], as_code=model_key == NO_MODEL), refusal]}
        session = self._session(key, request)
        active = session.active_run()
        if (not text.strip() and not paths) or (active is not None and active.tab == request.session_hash):
            return {}  # nothing to send, or Enter pressed while this tab's own run goes on
        if len(text) > self.settings.max_message_chars:
            session.add_note(
                f"⚠️ Your message has {len(text):,} characters; the limit is {self.settings.max_message_chars:,}. "
                "Nothing was run: shorten it, or put the text in a file and attach it."
            )
            return {"chat": session.view()}
        try:
            session.executor  # noqa: B018 - a sandbox now, or the sentence saying why not (nothing is queued then)
        except CapReached as exc:
            session.add_note(f"⚠️ {exc.message}")
            return {"chat": session.view()}
        model_key = model_key or self.catalog.default_key
        session.model_key = model_key
        digest = session.digest
        run_message(
            session,
            text,
            paths,
            model_key,
            user_token_from(oauth_token),
            request.session_hash,
            slots=self.registry.slots,
            uploaded=lambda used: self.registry.uploads.done(digest, list(used)),
        )
        return {"chat": session.view(), "box": busy_box(clear=True)}

    @outputs(*FOLLOWING)
    async def follow(self, key: str | None, request: gr.Request) -> AsyncIterator[Updates]:
        """Redraw what changed (the chat, the chat box, the files, the panel, Reset sandbox) until every run of the
        session has settled. Holds no thread while it waits. A newer follower of the same tab, a closed tab or a
        replaced session ends it."""
        tab_id = request.session_hash
        session = self.registry.peek(tab_id, key)
        tab = self.registry.tab(tab_id)
        if session is None or tab is None:
            return
        token = tab.follower = object()
        seen, seen_files, busy, offers = -1, session.store.version, None, None
        tick = drawn = 0.0
        while True:
            if tab.follower is not token or self.registry.tab(tab_id) is not tab or session.closed:
                return
            if session.changed.version == seen:
                await session.changed.changed_since(seen, TIMER_TICK if session.has_timer() else FOLLOW_WAIT)
            coalesce = drawn + REDRAW_INTERVAL - time.monotonic()
            if coalesce > 0 and session.unsettled():  # what changes meanwhile is drawn with it
                await asyncio.sleep(coalesce)
            version = session.changed.version
            done = not session.unsettled()  # read before drawing: a settled run has posted everything
            now = time.monotonic()
            update: Updates = {}
            if version != seen or done or (session.has_timer() and now - tick >= TIMER_TICK):
                update["chat"] = await asyncio.to_thread(session.view, now)
                seen, tick, drawn = version, now, time.monotonic()
                update["panel"] = self.panel(session)
            if (active := session.active_run() is not None) != busy:
                update["box"] = busy_box(False) if active else idle_box()
                busy = active
            if (offered := session.offers_reset()) != offers:
                update["reset"], offers = gr.Button(visible=offered), offered
            if session.store.version != seen_files:
                seen_files = session.store.version
                update.update(self._file_updates(session, tab))
            if update:
                session.touch()
                yield update
            if done:
                return

    @outputs("box")
    def stop(self, key: str | None, request: gr.Request) -> Updates:
        """Stop: the page is free at once; the run says how its code ended (interrupted, or running on)."""
        session = self.registry.peek(request.session_hash, key)
        if session is not None:
            session.stop_run()
        return {"box": idle_box()}

    @outputs("reset", "panel", "files", *FILE_SELECTION)
    def reset_sandbox(self, key: str | None, request: gr.Request) -> Updates:
        """Reset sandbox: ends code the sandbox cannot interrupt, by deleting the sandbox session."""
        session = self._session(key, request)
        session.reset_sandbox()
        for tab in self.registry.tabs_of(session):
            tab.selected = tab.pending_delete = None
        return {
            "reset": gr.Button(visible=False),
            "panel": self.panel(session),
            "files": fs.empty_table(),
            **_no_selection("The sandbox was reset: a new, empty one took its place (variables and files are gone)."),
        }

    @outputs("box")
    def example(self, model_key: str, evt: gr.SelectData) -> Updates:
        index = evt.index if isinstance(evt.index, int) else 0
        return {"box": example_message(index, model_key == NO_MODEL)}

    @outputs("chat", "box", "files", "panel", "reset", *FILE_SELECTION)
    def new_session(self, key: str | None, model_key: str, request: gr.Request) -> Updates:
        self._session(key, request)  # refuses a key that is not the tab's
        try:
            session = self.registry.reset(request.session_hash, key, self._visitor(request))
        except CapReached as exc:
            raise _toast(exc.message, "Not now") from None
        session.model_key = model_key or self.catalog.default_key
        return {
            "chat": session.view(),
            "box": idle_box(),
            "files": fs.empty_table(),
            "panel": self.panel(session),
            "reset": gr.Button(visible=False),
            **_no_selection("New session: a fresh agent and an empty sandbox."),
        }

    @outputs("panel")
    def model_changed(self, key: str | None, model_key: str, request: gr.Request) -> Updates:
        session = self.registry.peek(request.session_hash, key)
        if session is not None:
            session.model_key = model_key
        return {"panel": self.panel(session, model_key)}

    # ---- file browser -------------------------------------------------------------------------------------------
    def _file_updates(self, session: UserSession, tab: Tab) -> Updates:
        """The listing with the tab's selection marked by name; a selected file that is gone is unselected, saying so."""
        files = session.store.files
        gone = tab.selected is not None and tab.selected not in fs.file_names(files)
        update: Updates = {}
        if gone:
            update = _no_selection(
                f"“{markdown_escape(tab.selected or '')}” is no longer in /mnt/data; the selection was cleared."
            )
            tab.selected = tab.pending_delete = None
        update["files"] = fs.table(files, tab.selected)
        return update

    def _listing(self, session: UserSession, tab: Tab, status: str = "") -> Updates:
        _, error = session.store.refresh()
        if error:
            return {"status": error}
        update = self._file_updates(session, tab)
        if status and "status" not in update:
            update["status"] = status
        return update

    @outputs("files", *FILE_SELECTION)
    def refresh_files(self, key: str | None, request: gr.Request) -> Updates:
        return self._listing(*self._tab(key, request))

    @outputs("files", *FILE_SELECTION)
    def upload(self, paths: list[str] | None, key: str | None, request: gr.Request) -> Updates:
        session = self._session(key, request)
        tab = self.registry.tab(request.session_hash)
        assert tab is not None
        given = [str(p) for p in paths or []]
        try:
            uploaded, refused = session.store.upload(given)
        except CapReached as exc:
            return {"status": exc.message}
        finally:
            self.registry.uploads.done(session.digest, given)
        return self._listing(session, tab, fs.upload_report(uploaded, refused))

    @outputs("files", *FILE_SELECTION)
    def select_file(self, key: str | None, evt: gr.SelectData, request: gr.Request) -> Updates:
        session, tab = self._tab(key, request)
        row = evt.row_value or []
        name = str(row[fs.NAME_COLUMN]) if len(row) > fs.NAME_COLUMN else ""
        if not name or session.store.current is None:
            return {}
        size = next((f.size for f in session.store.files if f.name == name), None)
        source = Source(
            name,
            size,
            head=lambda count: session.store.head(name, count),
            whole=lambda: session.store.fetch(name, WHOLE_FILE_BYTES, prefix="preview", keep=4),
        )
        try:
            shown = preview_source(source)
        except Exception as exc:
            tab.selected = tab.pending_delete = None
            return {**_no_selection(fs.describe_error(exc, name)), "files": fs.table(session.store.files)}
        tab.selected, tab.pending_delete = name, None
        return {
            "files": fs.table(session.store.files, name),
            "status": f"Selected {shown_name(name)}.",
            **_selection_updates(name, shown, self.registry.link(session, name)),
        }

    @outputs("confirm_yes", "confirm_text", *FILE_SELECTION)
    def ask_delete(self, key: str | None, request: gr.Request) -> Updates:
        """Delete asks first, naming the file; the answer deletes exactly the file it named."""
        _, tab = self._tab(key, request)
        if tab.selected is None:
            return _no_selection("Select a file first.")
        tab.pending_delete = tab.selected
        name = markdown_escape(tab.selected)
        return {
            "confirm": gr.Column(visible=True),
            "confirm_text": f"Delete **{name}** from /mnt/data? This cannot be undone.",
            "confirm_yes": gr.Button(value=f"Delete {tab.selected}"),
        }

    @outputs("files", *FILE_SELECTION)
    def confirm_delete(self, key: str | None, request: gr.Request) -> Updates:
        session, tab = self._tab(key, request)
        name, tab.pending_delete = tab.pending_delete, None
        if name is None:
            return {"confirm": gr.Column(visible=False)}
        try:
            session.store.delete(name)
            message = f"Deleted {shown_name(name)}."
        except Exception as exc:
            message = fs.describe_error(exc, name)
        tab.selected = None
        return {**_no_selection(message), **self._listing(session, tab)}

    @outputs("confirm")
    def cancel_delete(self, key: str | None, request: gr.Request) -> Updates:
        self._tab(key, request)[1].pending_delete = None
        return {"confirm": gr.Column(visible=False)}

    # ---- exports ------------------------------------------------------------------------------------------------
    @outputs("export", "status")
    def export_notebook(self, key: str | None, request: gr.Request) -> Updates:
        session = self._session(key, request)
        try:
            path = write_notebook(session.notebook, session.store, session.short_id)
        except fs.TooLarge as exc:
            return {"export": None, "status": f"Could not write the notebook: {exc.message}."}
        executed = plural(session.notebook.code_cells, "executed cell")
        return {
            "export": str(path),
            "status": f"Downloaded {path.name}: the conversation and {executed} ({len(session.notebook)} cells in all).",
        }

    @outputs("export_link", "status")
    def export_zip(self, key: str | None, request: gr.Request) -> Updates:
        session = self._session(key, request)
        files, error = session.store.refresh()
        if error:
            return {"export_link": "", "status": error}
        listed = [f for f in files if getattr(f, "type", "file") != "directory"]
        if not listed:
            return {"export_link": "", "status": "There are no files in /mnt/data to download yet."}
        total = sum(f.size or 0 for f in listed)
        if total > ZIP_MAX_BYTES or len(listed) > ZIP_MAX_FILES:
            return {
                "export_link": "",
                "status": f"The files in /mnt/data add up to {human_size(total)} in {plural(len(listed), 'file')}; "
                f"the zip download takes at most {human_size(ZIP_MAX_BYTES)} and {ZIP_MAX_FILES:,} files. Download "
                "the large files one by one (select a file, then Download).",
            }
        token = self.registry.link(session, None, tuple(sorted(f.name for f in listed)))
        return {
            "export_link": token,
            "status": f"Downloading mnt-data-{session.short_id}.zip: {plural(len(listed), 'file')}.",
        }


def _toast(text: str, title: str) -> gr.Error:
    # a toast renders its message as HTML: the reason may quote tool output such as "<https://...>"
    return gr.Error(html.escape(text), title=title, print_exception=False)


def _no_selection(status: str) -> Updates:
    """The file browser with nothing selected, saying `status`."""
    return {"status": status, **_selection_updates(None, None, "")}


def _selection_updates(name: str | None, shown: Preview | None, link: str) -> Updates:
    """What the file browser shows for the selected file: its actions (Download streams it through `link`) and its
    preview. With none selected: buttons off, preview and delete question gone."""
    if name is None:
        download = gr.Button(value="Download", interactive=False)
        delete = gr.Button(value="Delete", interactive=False)
    else:
        download = gr.Button(value=f"Download {name}", interactive=True)
        delete = gr.Button(value=f"Delete {name}…", interactive=True)
    return {
        "download": download,
        "download_link": link,
        "delete": delete,
        "confirm": gr.Column(visible=False),
        **_preview_updates(shown),
    }


def _preview_updates(shown: Preview | None) -> Updates:
    shown = shown or Preview("")
    return {
        "preview_note": shown.caption,
        "preview_table": gr.Dataframe(value=shown.table, visible=shown.table is not None),
        "preview_image": gr.Image(value=shown.image, visible=shown.image is not None),
        "preview_text": gr.Textbox(value=shown.text, visible=shown.text is not None),
    }
