"""The page: one gr.Blocks layout and its event wiring. Behaviour lives in handlers.py."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import gradio as gr

from playground.backend import Backend, start_backend
from playground.compat import make_ast_parse_thread_safe
from playground.examples import ASSETS, chatbot_examples
from playground.files import COLUMNS, empty_table
from playground.handlers import Handlers
from playground.models import ModelCatalog, ModelFactory
from playground.settings import Settings

TITLE = "Sessions Playground"
NO_FILES_HINT = "Drop files on the chat box or use Upload; select a row to download or delete it."
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
        f'<span class="badge">API {html.escape(backend.effective_api_version)}</span>',
        '<span class="badge">smolagents CodeAgent</span>',
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


def build_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    extra_models: Mapping[str, ModelFactory] | None = None,
) -> gr.Blocks:
    """Build the page. `backend` defaults to the configured pool or a new embedded emulator; `extra_models`
    (label -> zero-argument factory) are listed first in the picker and chosen by default (tests use this)."""
    make_ast_parse_thread_safe()
    backend = backend or start_backend(settings)
    catalog = ModelCatalog.from_settings(settings, extra_models)
    h = Handlers(settings, backend, catalog)

    # delete_cache: Gradio keeps copies of uploads and served files; drop them after an hour, and all at shutdown
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.HTML(header_html(backend))
        if settings.space_oauth:
            gr.LoginButton()
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=420):
                chatbot = gr.Chatbot(
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
                chat_input = gr.MultimodalTextbox(
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
                    interactive=not backend.refusal,
                )
            with gr.Column(scale=4, min_width=320):
                with gr.Group():
                    model = gr.Dropdown(
                        choices=catalog.choices,
                        value=catalog.default_key,
                        label="Model",
                        elem_id="model-picker",
                        interactive=True,
                    )
                    new_session = gr.Button("↺ New session", elem_id="new-session", size="sm")
                panel = gr.HTML(h.panel(None, catalog.default_key), elem_id="session-panel")
                gr.Markdown("### Files in `/mnt/data`", elem_classes=["section-title"])
                file_list = gr.Dataframe(
                    value=empty_table(),
                    headers=COLUMNS,
                    interactive=False,
                    elem_id="file-list",
                    show_label=False,
                    wrap=True,
                    max_height=320,
                )
                file_status = gr.Markdown(NO_FILES_HINT, elem_id="file-status")
                selected = gr.State(None)
                with gr.Row():
                    upload_btn = gr.UploadButton(
                        "⬆ Upload",
                        file_count="multiple",
                        elem_id="upload-btn",
                        size="sm",
                        variant="primary",
                        interactive=not backend.refusal,
                    )
                    refresh_btn = gr.Button("⟳ Refresh", elem_id="refresh-btn", size="sm")
                with gr.Row():
                    download_btn = gr.DownloadButton("Download", elem_id="download-btn", size="sm", interactive=False)
                    delete_btn = gr.Button(
                        "Delete", elem_id="delete-btn", size="sm", variant="stop", interactive=False
                    )

        run_outputs = [chatbot, chat_input, file_list, panel]
        run_kwargs: dict[str, Any] = {"show_progress": "hidden", "trigger_mode": "once", **PRIVATE}
        chat_input.submit(h.submit, [chat_input, chatbot, model], run_outputs, **run_kwargs)
        chatbot.example_select(h.example, [model], [chat_input], queue=False, **PRIVATE).then(
            h.submit, [chat_input, chatbot, model], run_outputs, **run_kwargs
        )
        # No `cancels=`: a cancelled generator's completion can land after our output and redraw the old chat.
        # Stop and New session set the run's stop flag instead; the run's generator notices within 0.1 s.
        chat_input.stop(h.stop, None, [chat_input], queue=False, **PRIVATE)
        new_session.click(
            h.new_session,
            [model],
            [chatbot, chat_input, file_list, panel, file_status, selected, download_btn, delete_btn],
            **PRIVATE,
        )
        model.change(h.model_changed, [model], [panel], **PRIVATE)
        upload_btn.upload(h.upload, [upload_btn], [file_list, file_status], **PRIVATE)
        refresh_btn.click(h.refresh_files, None, [file_list, file_status], **PRIVATE)
        file_list.select(h.select_file, None, [selected, download_btn, delete_btn, file_status], **PRIVATE)
        delete_btn.click(
            h.delete_file, [selected], [file_list, file_status, selected, download_btn, delete_btn], **PRIVATE
        )
        demo.load(h.load, [model], [panel, file_list], **PRIVATE)
        demo.unload(h.unload)
    demo.queue(default_concurrency_limit=settings.concurrency)
    h.registry.start_reaper()
    demo.playground = h  # tests and app.py reach the registry and backend through this
    return demo


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for `demo.launch` shared by app.py and the tests."""
    return {
        "server_name": settings.server_name,
        "server_port": settings.server_port,
        "max_file_size": settings.max_upload_bytes,
        "max_threads": max(40, settings.concurrency * 3),
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
