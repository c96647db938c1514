"""The page: one gr.Blocks layout and its event wiring, and `PlaygroundApp`, what `build_app` returns (the page
and what it runs on, with `launch` and `close`). Behaviour lives in handlers.py."""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from playground.backend import Backend, start_backend
from playground.compat import make_ast_parse_thread_safe, use_secret_hash_seed
from playground.examples import ASSETS, chatbot_examples
from playground.files import COLUMNS, empty_table
from playground.gate import SET_TICKET_JS, TICKET_SCRIPT, Gate
from playground.handlers import NO_FILES_HINT, Handlers
from playground.model_catalog import ModelCatalog, ModelFactory
from playground.sessions import BrowserSessions
from playground.settings import Settings

TITLE = "Sessions Playground"
GRADIO_TABS_KEPT = 1000
PRIVATE = {"api_visibility": "private"}
LOGO = (
    '<svg class="pg-logo" viewBox="0 0 64 64" aria-hidden="true"><rect width="64" height="64" rx="14" fill="#4f46e5"/>'
    '<path d="M24 12h16v4h-3v14l13 20a4 4 0 0 1-3.4 6H17.4a4 4 0 0 1-3.4-6l13-20V16h-3z" fill="#fff"/>'
    '<path d="M20 44h24l4 7H16z" fill="#a5b4fc"/></svg>'
)


def header_html(backend: Backend) -> str:
    tone = "ok" if backend.isolated else "warn"
    badges = [
        f'<span class="badge badge-{tone}" id="backend-badge">{html.escape(backend.badge)}</span>',
        f'<span class="badge badge-minor">API {html.escape(backend.effective_api_version)}</span>',
        '<span class="badge badge-minor">smolagents CodeAgent</span>',
    ]
    warning = ""
    if backend.refusal:
        warning = (
            '<div class="isolation-warning" id="isolation-warning"><strong>This server runs no code.</strong> '
            f"{html.escape(backend.refusal)}</div>"
        )
    elif backend.warning:
        warning = f'<div class="isolation-warning" id="isolation-warning">⚠️ {html.escape(backend.warning)}</div>'
    return (
        '<div class="pg-header">'
        f"<h1>{LOGO}{TITLE}</h1>"
        "<p>Chat with a code-writing agent. Every step’s thinking, code, output and plots stream in as they happen; "
        "its Python runs in a sandbox session with your files in <code>/mnt/data</code>.</p>"
        f'<div class="badges">{"".join(badges)}</div>{warning}</div>'
    )


DOWNLOAD_JS = """(file) => {
    if (!file || !file.url) return;
    const link = document.createElement('a');
    link.href = file.url;
    link.download = file.orig_name || '';
    document.body.appendChild(link);
    link.click();
    link.remove();
}"""
"""Starts the browser's download of the file an export just made: one click on an export button is enough."""

LINK_JS = """(token) => {
    if (!token) return;
    const link = document.createElement('a');
    link.href = new URL('playground/file/' + token, window.location.href).href;
    link.download = '';
    document.body.appendChild(link);
    link.click();
    link.remove();
}"""
"""Starts the browser's download of a file the server streams from the sandbox (see gate.py)."""


SHOW_CHAT_JS = """(...inputs) => {
    document.querySelector('#chat-input')?.scrollIntoView({block: 'end', behavior: 'instant'});
    return inputs;
}"""
"""On a phone the side panel is below the chat: sending a message brings the chat (and so the answer) into view."""


@dataclass
class PlaygroundApp:
    """The page (`demo`, a gr.Blocks) and what it runs on: the handlers with every visitor's session, and the
    sandbox backend. `close` ends it all: the server, every session (its sandbox deleted), an emulator it started."""

    demo: gr.Blocks
    handlers: Handlers
    owns_backend: bool = True

    @property
    def settings(self) -> Settings:
        return self.handlers.settings

    @property
    def backend(self) -> Backend:
        return self.handlers.backend

    @property
    def registry(self) -> BrowserSessions:
        return self.handlers.registry

    def launch(self, **overrides: Any) -> None:
        """Serve the page (`launch_kwargs` of the settings, then `overrides`, e.g. prevent_thread_lock=True), behind
        the gate (uploads need a live page; downloads stream from the sandbox) with the script that sends the
        page's upload ticket."""
        gate = {"middleware": [Middleware(Gate, registry=self.registry)]}
        self.demo.launch(**{**launch_kwargs(self.settings), "head": TICKET_SCRIPT, "app_kwargs": gate, **overrides})

    def close(self) -> None:
        """Stop serving, close every session (deleting its sandbox), and stop an emulator this app started."""
        self.demo.close()
        self.registry.close_all()
        if self.owns_backend:
            self.backend.stop()


def build_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    extra_models: Mapping[str, ModelFactory] | None = None,
) -> PlaygroundApp:
    """Build the page. `backend` defaults to the configured pool or a new embedded emulator (the app stops it on
    `close`; one passed in is left running); `extra_models` (label -> zero-argument factory) are listed first in the
    picker and chosen by default (tests use this)."""
    make_ast_parse_thread_safe()
    use_secret_hash_seed()  # before anything is cached
    owns_backend = backend is None
    backend = backend or start_backend(settings)
    catalog = ModelCatalog.from_settings(settings, extra_models)
    # the sessions' scratch directories live in Gradio's cache directory, so Gradio serves them without a copy
    h = Handlers(settings, backend, catalog, Path(get_upload_folder()))

    # delete_cache: Gradio keeps copies of uploads and served files; drop them after an hour, and all at shutdown
    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as demo:
        c = _layout(backend, catalog, settings, h)
        key = c["key"]
        wire = _Wiring(c)
        # Following a run holds no thread (an async generator): followers have a concurrency id of their own and no
        # limit, so any number of long runs leave the other events' slots free. Starting a run is quick; how many
        # messages run at once (per visitor and in all) is the run slots' business (visitors.py), which say so.
        follow: dict[str, Any] = {"concurrency_id": "follow", "concurrency_limit": None, "show_progress": "hidden"}
        start: dict[str, Any] = {"concurrency_id": "start", "concurrency_limit": None, "show_progress": "hidden"}
        # "multiple": a message sent while a stopped run's code still runs must reach the server (which queues it
        # behind that run, saying so); the server itself ignores Enter pressed while the tab's own run goes on.
        sent = wire(c["box"].submit, h.submit, [c["box"], c["model"], key], js=SHOW_CHAT_JS, trigger_mode="multiple",
                    **start, **PRIVATE)  # fmt: skip
        wire(sent.then, h.follow, [key], **follow, **PRIVATE)
        example = wire(c["chat"].example_select, h.example, [c["model"]], queue=False, **PRIVATE)
        sent = wire(example.then, h.submit, [c["box"], c["model"], key], **start, **PRIVATE)
        wire(sent.then, h.follow, [key], **follow, **PRIVATE)
        # No `cancels=`: a cancelled generator's completion can land after our output and redraw the old chat.
        # Stop asks the run to stop; the page's follower draws how it ends.
        wire(c["box"].stop, h.stop, [key], queue=False, **PRIVATE)
        wire(c["reset"].click, h.reset_sandbox, [key], **PRIVATE)
        wire(c["new_session"].click, h.new_session, [key, c["model"]], **PRIVATE)
        wire(c["model"].change, h.model_changed, [key, c["model"]], **PRIVATE)
        files: dict[str, Any] = {"concurrency_id": "files", "concurrency_limit": settings.concurrency}
        wire(c["upload"].upload, h.upload, [c["upload"], key], **files, **PRIVATE)
        wire(c["refresh"].click, h.refresh_files, [key], **files, **PRIVATE)
        wire(c["files"].select, h.select_file, [key], **files, **PRIVATE)
        c["download"].click(None, [c["download_link"]], None, js=LINK_JS, **PRIVATE)
        wire(c["delete"].click, h.ask_delete, [key], **PRIVATE)
        wire(c["confirm_yes"].click, h.confirm_delete, [key], **files, **PRIVATE)
        wire(c["confirm_no"].click, h.cancel_delete, [key], **PRIVATE)
        notebook = wire(c["export_notebook"].click, h.export_notebook, [key], **files, **PRIVATE)
        notebook.then(None, [c["export"]], None, js=DOWNLOAD_JS, **PRIVATE)
        zipped = wire(c["export_zip"].click, h.export_zip, [key], **files, **PRIVATE)
        zipped.then(None, [c["export_link"]], None, js=LINK_JS, **PRIVATE)
        loaded = wire(demo.load, h.load, [key], **PRIVATE)
        loaded = loaded.then(None, [c["ticket"]], None, js=SET_TICKET_JS, **PRIVATE)
        wire(loaded.then, h.follow, [key], **follow, **PRIVATE)
        demo.unload(h.unload)
    demo.queue(default_concurrency_limit=settings.concurrency)
    h.registry.start_reaper()
    return PlaygroundApp(demo, h, owns_backend)


def _layout(backend: Backend, catalog: ModelCatalog, settings: Settings, h: Handlers) -> dict[str, Any]:
    """The components, by the names the handlers' updates use: the chat beside (on a phone, above) the side panel."""
    gr.HTML(header_html(backend))
    if settings.space_oauth or settings.require_login:
        gr.LoginButton()
    c: dict[str, Any] = {"key": gr.BrowserState(None, storage_key="sessions-playground-key")}
    # values the page's scripts read: the upload ticket, and download tokens (see gate.py)
    for name in ("ticket", "download_link", "export_link"):
        c[name] = gr.Textbox(visible="hidden", elem_id=f"{name.replace('_', '-')}-value", show_label=False)
    with gr.Row(equal_height=False, elem_id="main-row"):
        with gr.Column(scale=7, min_width=320, elem_id="chat-column"):
            c.update(_chat(backend))
        with gr.Column(scale=4, min_width=300, elem_id="side-column"):
            c.update(_session_controls(catalog, h))
            c.update(_file_browser(backend))
            c.update(_file_preview())
    return c


def _chat(backend: Backend) -> dict[str, Any]:
    """The conversation, the chat box, and Reset sandbox (shown while code that cannot be interrupted runs)."""
    chat = gr.Chatbot(
        elem_id="chatbot",
        show_label=False,
        height="calc(100vh - 300px)",
        min_height=460,
        examples=chatbot_examples(),
        placeholder="**Ask for an analysis, or drop a CSV on the box below.**\n\n"
        "Or start from an example with the bundled sample dataset:",
        group_consecutive_messages=False,
        layout="panel",
        feedback_options=None,
        buttons=["copy"],
        allow_file_downloads=True,
    )
    box = gr.MultimodalTextbox(
        elem_id="chat-input",
        show_label=False,
        file_count="multiple",
        sources=["upload"],
        placeholder=(
            "This server runs no code (see above)."
            if backend.refusal
            else "Ask the agent… (drop files here or use the paperclip; Enter sends)"
        ),
        max_plain_text_length=100_000,
        autofocus=True,
        # enabled by the page's load, which gives a new browser its key: a message sent before would carry none
        interactive=False,
    )
    reset = gr.Button(
        "⟲ Reset sandbox: end the running code now (variables and files are lost)",
        elem_id="reset-sandbox",
        variant="stop",
        size="sm",
        visible=False,
    )
    return {"chat": chat, "box": box, "reset": reset}


def _session_controls(catalog: ModelCatalog, h: Handlers) -> dict[str, Any]:
    """The model picker, New session, the session panel and the two exports."""
    c: dict[str, Any] = {}
    with gr.Group():
        c["model"] = gr.Dropdown(
            choices=catalog.choices, value=catalog.default_key, label="Model", elem_id="model-picker", interactive=True
        )
        c["new_session"] = gr.Button("↺ New session", elem_id="new-session", size="sm")
    c["panel"] = gr.HTML(h.panel(None, catalog.default_key), elem_id="session-panel")
    with gr.Row(elem_id="export-row"):
        c["export_notebook"] = gr.Button("⬇ Notebook (.ipynb)", elem_id="export-notebook", size="sm")
        c["export_zip"] = gr.Button("⬇ All files (.zip)", elem_id="export-zip", size="sm")
    c["export"] = gr.File(visible=False, elem_id="export-file")
    return c


def _file_browser(backend: Backend) -> dict[str, Any]:
    """The listing of /mnt/data, its status line, the file actions and the delete question."""
    c: dict[str, Any] = {}
    gr.Markdown("### Files in `/mnt/data`", elem_classes=["section-title"])
    c["files"] = gr.Dataframe(
        value=empty_table(),
        headers=COLUMNS,
        interactive=False,
        elem_id="file-list",
        show_label=False,
        wrap=True,
        max_height=320,
        column_widths=["24px", "44%", "16%", "32%"],
    )
    c["status"] = gr.Markdown(NO_FILES_HINT, elem_id="file-status")
    with gr.Row():
        c["upload"] = gr.UploadButton(
            "⬆ Upload",
            file_count="multiple",
            elem_id="upload-btn",
            size="sm",
            variant="primary",
            interactive=not backend.refusal,
        )
        c["refresh"] = gr.Button("⟳ Refresh", elem_id="refresh-btn", size="sm")
    with gr.Row():
        c["download"] = gr.Button("Download", elem_id="download-btn", size="sm", interactive=False)
        c["delete"] = gr.Button("Delete", elem_id="delete-btn", size="sm", variant="stop", interactive=False)
    with gr.Column(visible=False, elem_id="delete-confirm") as confirm:
        c["confirm_text"] = gr.Markdown(elem_id="delete-question")
        with gr.Row():
            c["confirm_yes"] = gr.Button("Delete", elem_id="delete-yes", size="sm", variant="stop")
            c["confirm_no"] = gr.Button("Cancel", elem_id="delete-no", size="sm")
    c["confirm"] = confirm
    return c


def _file_preview() -> dict[str, Any]:
    """The selected file's preview: a caption, and a table, an image or a text (at most one is shown)."""
    return {
        "preview_note": gr.Markdown(elem_id="preview-caption"),
        "preview_table": gr.Dataframe(
            visible=False, interactive=False, elem_id="preview-table", show_label=False, max_height=360
        ),
        "preview_image": gr.Image(
            visible=False, interactive=False, elem_id="preview-image", show_label=False, type="filepath"
        ),
        "preview_text": gr.Textbox(
            visible=False, interactive=False, elem_id="preview-text", show_label=False, lines=8, max_lines=20
        ),
    }


class _Wiring:
    """Connects an event to a handler that returns named updates; its outputs are the components the handler
    declares (`handlers.outputs`)."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.c = components

    def __call__(self, event: Any, handler: Any, inputs: Any, **kwargs: Any) -> Any:
        names = handler.outputs
        unknown = [name for name in names if name not in self.c]
        if unknown:
            raise KeyError(f"{handler.__name__} declares outputs the page does not have: {unknown}")
        return event(_named(handler, self.c), inputs, [self.c[name] for name in names], **kwargs)


def _named(handler: Any, components: dict[str, Any]) -> Any:
    """`handler` with its {name: value} updates turned into Gradio's {component: value} (generators too). An update
    naming an output the handler did not declare is a bug: it fails loudly rather than being dropped by Gradio."""
    declared = set(handler.outputs)

    def convert(update: dict[str, Any]) -> dict[Any, Any]:
        undeclared = update.keys() - declared
        if undeclared:
            raise KeyError(f"{handler.__name__} updated outputs it does not declare: {sorted(undeclared)}")
        return {components[name]: value for name, value in update.items()}

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def following(*args: Any, **kwargs: Any) -> AsyncIterator[dict[Any, Any]]:
            async for update in handler(*args, **kwargs):
                yield convert(update)

        return following

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[dict[Any, Any]]:
            for update in handler(*args, **kwargs):
                yield convert(update)

        return streaming

    @functools.wraps(handler)
    def single(*args: Any, **kwargs: Any) -> dict[Any, Any]:
        return convert(handler(*args, **kwargs))

    return single


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """The settings' arguments for `demo.launch` (`PlaygroundApp.launch` adds the gate and its script)."""
    return {
        "server_name": settings.server_name,
        "server_port": settings.server_port,
        "max_file_size": settings.max_upload_bytes,
        "max_threads": max(40, settings.concurrency * 3),
        # Gradio keeps ~150 KB per tab (a copy of the page's configuration); bound how many tabs it keeps that for
        # (closed tabs' entries go at once, see compat.forget_gradio_session; this page keeps nothing there it needs)
        "state_session_capacity": GRADIO_TABS_KEPT,
        "allowed_paths": [str(ASSETS)],
        "footer_links": [],
        "run_history": False,
        "enable_monitoring": False,
        "mcp_server": False,
        "ssr_mode": False,
        "show_error": False,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"),
        "css_paths": [str(ASSETS / "style.css")],
        "favicon_path": str(ASSETS / "favicon.svg"),
    }
