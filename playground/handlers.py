"""Gradio event handlers: small functions that find the caller's session and delegate to chat/files/sessions.

Every handler keys the session on `request.session_hash` (made by Gradio, per tab); none accepts an identifier.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from playground import files as fs
from playground.backend import Backend
from playground.chat import run_message, user_messages
from playground.examples import example_message
from playground.models import NO_MODEL, ModelCatalog
from playground.sessions import SessionRegistry, UserSession, user_token_from
from playground.settings import Settings
from playground.steps import format_tokens

log = logging.getLogger(__name__)

IDLE_NOTICE = (
    "⏱ Your previous session was closed after being idle; this is a fresh sandbox (files and variables are gone)."
)


def idle_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(submit_btn=True, stop_btn=False, interactive=True)


def busy_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True)


class Handlers:
    """The playground's behaviour, independent of the layout in ui.py."""

    def __init__(self, settings: Settings, backend: Backend, catalog: ModelCatalog) -> None:
        self.settings, self.backend, self.catalog = settings, backend, catalog
        self.registry = SessionRegistry(backend, catalog, settings)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _session(self, request: gr.Request) -> UserSession:
        return self.registry.get(request.session_hash)

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

    def _table(self, session: UserSession) -> tuple[Any, str]:
        files, error = fs.list_files(session)
        return fs.table(files), error or ""

    # ---- page load / unload -------------------------------------------------------------------------------------
    def load(self, model_key: str, request: gr.Request) -> tuple[str, Any]:
        if self.backend.refusal:  # no sandbox: nothing to allocate
            return self.panel(None, model_key), fs.empty_table()
        session = self._session(request)
        session.model_key = model_key or self.catalog.default_key
        return self.panel(session), fs.empty_table()

    def unload(self, request: gr.Request) -> None:
        self.registry.close(request.session_hash)

    # ---- chat ---------------------------------------------------------------------------------------------------
    def submit(
        self,
        message: dict | None,
        history: list | None,
        model_key: str,
        request: gr.Request,
        oauth_token: gr.OAuthToken | None = None,
    ) -> Iterator[tuple]:
        """Generator: the chat, the chat box, the file table, the session panel."""
        text = str((message or {}).get("text") or "")
        paths = [str(p) for p in (message or {}).get("files") or []]
        if self.backend.refusal:
            refusal = gr.ChatMessage(role="assistant", content=f"This server runs no code. {self.backend.refusal}")
            yield [*(history or []), *user_messages(text, []), refusal], gr.skip(), gr.skip(), gr.skip()
            return
        session = self._session(request)
        if (not text.strip() and not paths) or (session.run.alive() and not session.run.stop.is_set()):
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        history = list(history or [])
        if self.registry.pop_expired_notice(request.session_hash):
            history.append(gr.ChatMessage(content=IDLE_NOTICE))
        history += user_messages(text, paths)
        model_key = model_key or self.catalog.default_key
        box: Any = busy_box()
        updates = run_message(session, text, paths, model_key, user_token_from(oauth_token))
        handle = None
        for update in updates:
            handle = handle or session.run
            table = fs.table(update.files) if update.files is not None else gr.skip()
            yield history + update.messages, box, table, self.panel(session, model_key)
            box = gr.skip()
        if handle is not None and handle.stop.is_set() and handle.reason != "user":
            return  # the tab was closed or "New session" emptied the page: draw nothing over it
        yield gr.skip(), idle_box(), gr.skip(), self.panel(session, model_key)

    def stop(self, request: gr.Request) -> gr.MultimodalTextbox:
        """Stop button: the run draws "Stopped" itself within a poll interval (one writer for the chat, so no
        race with the running event); the agent ends at its next step boundary."""
        session = self.registry.peek(request.session_hash)
        if session is not None:
            session.interrupt("user")
        return idle_box()

    def example(self, model_key: str, evt: gr.SelectData) -> dict:
        return example_message(evt.index if isinstance(evt.index, int) else 0, model_key == NO_MODEL)

    def new_session(self, model_key: str, request: gr.Request) -> tuple:
        session = self.registry.reset(request.session_hash)
        session.model_key = model_key or self.catalog.default_key
        return (
            [],
            idle_box(),
            fs.empty_table(),
            self.panel(session),
            "New session: a fresh agent and an empty sandbox.",
            None,
            gr.DownloadButton(value=None, interactive=False, label="Download"),
            gr.Button(interactive=False),
        )

    def model_changed(self, model_key: str, request: gr.Request) -> str:
        session = self._session(request)
        session.model_key = model_key
        return self.panel(session, model_key)

    # ---- file browser -------------------------------------------------------------------------------------------
    def refresh_files(self, request: gr.Request) -> tuple[Any, str]:
        return self._table(self._session(request))

    def upload(self, paths: list[str] | None, request: gr.Request) -> tuple[Any, str]:
        if self.backend.refusal:
            return fs.empty_table(), "This server runs no code, so it keeps no files."
        session = self._session(request)
        uploaded, refused = fs.upload(session, [str(p) for p in paths or []])
        table, error = self._table(session)
        return table, error or fs.upload_report(uploaded, refused)

    def select_file(self, evt: gr.SelectData, request: gr.Request) -> tuple:
        session = self._session(request)
        row = evt.row_value or []
        name = str(row[0]) if row else ""
        if not name:
            return None, gr.skip(), gr.skip(), ""
        try:
            local = fs.fetch(session, name)
        except Exception as exc:
            return (
                None,
                gr.DownloadButton(value=None, interactive=False),
                gr.Button(interactive=False),
                fs.describe_error(exc, name),
            )
        return (
            name,
            gr.DownloadButton(value=str(local), label=f"Download {name}", interactive=True),
            gr.Button(interactive=True),
            f"Selected `{name}`.",
        )

    def delete_file(self, name: str | None, request: gr.Request) -> tuple:
        session = self._session(request)
        message = ""
        if name:
            try:
                fs.delete(session, name)
                message = f"Deleted `{name}`."
            except Exception as exc:
                message = fs.describe_error(exc, name)
        table, error = self._table(session)
        return (
            table,
            error or message,
            None,
            gr.DownloadButton(value=None, interactive=False, label="Download"),
            gr.Button(interactive=False),
        )
