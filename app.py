"""Sessions Playground: `python app.py` serves the Gradio app (127.0.0.1:7860 unless GRADIO_SERVER_NAME/PORT say
otherwise). Importing this module starts nothing; `app.demo` builds the page (and the local sandbox) on first use."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from playground.settings import load_settings

_demo: Any = None


def build() -> Any:
    """The page for the current environment (the Blocks object is cached)."""
    global _demo
    if _demo is None:
        from playground.ui import build_app

        _demo = build_app(load_settings())
    return _demo


def __getattr__(name: str) -> Any:  # `app.demo` for tools that expect a module-level Blocks (gradio reload mode)
    if name == "demo":
        return build()
    raise AttributeError(name)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from playground.ui import launch_kwargs

    settings = load_settings()
    demo = build()
    # `docker stop` sends SIGTERM: leave through the `finally` below, so every sandbox is deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        demo.launch(**launch_kwargs(settings))
    finally:
        demo.playground.registry.close_all()
        demo.playground.backend.stop()


if __name__ == "__main__":
    main()
