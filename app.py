"""Sessions Playground: `python app.py` serves the Gradio app (127.0.0.1:7860 unless GRADIO_SERVER_NAME/PORT say
otherwise). Importing this module starts nothing; `app.demo` builds the page (and the local sandbox) on first use."""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from playground.settings import load_settings

if TYPE_CHECKING:
    from playground.ui import PlaygroundApp

_app: PlaygroundApp | None = None


def build() -> PlaygroundApp:
    """The app for the current environment (built once)."""
    global _app
    if _app is None:
        from playground.ui import build_app

        _app = build_app(load_settings())
    return _app


def __getattr__(name: str) -> Any:  # `app.demo` for tools that expect a module-level Blocks (gradio reload mode)
    if name == "demo":
        return build().demo
    raise AttributeError(name)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build()
    # `docker stop` sends SIGTERM: leave through the `finally` below, so every sandbox is deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app.launch()
    finally:
        app.close()


if __name__ == "__main__":
    main()
