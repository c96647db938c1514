"""Work-arounds for bugs in dependencies that several simultaneous users trigger."""

from __future__ import annotations

import ast
import functools
import secrets
import sys
import threading

_AST_LOCK = threading.RLock()


def make_ast_parse_thread_safe() -> bool:
    """Serialize `ast.parse` across threads (idempotent; returns whether a patch is in place).

    CPython before 3.13 keeps the AST constructor's recursion depth in interpreter-wide state, so two threads
    parsing at once can fail with "SystemError: AST constructor recursion depth mismatch".
    smolagents parses source code on every agent run and step (tool definitions, code blobs), so with ten users
    at once an occasional run failed. Parsing is short; a lock costs nothing noticeable.
    """
    if sys.version_info >= (3, 13):
        return False
    if getattr(ast.parse, "_playground_locked", False):
        return True
    original = ast.parse

    @functools.wraps(original)
    def parse(*args, **kwargs):
        with _AST_LOCK:
            return original(*args, **kwargs)

    parse._playground_locked = True  # type: ignore[attr-defined]
    ast.parse = parse
    return True


def use_secret_hash_seed() -> None:
    """Give Gradio a hash seed known only to this process (idempotent).

    Gradio names every cached file after a SHA-256 of a seed and the file's content, and serves whatever is in its
    cache to anyone who asks for that name. The seed is read from `site-packages/gradio/hash_seed.txt`, which any
    sandboxed code can read too: with it, anyone could compute the cache URL of a file whose content they guess and
    confirm the guess. A random seed per process makes those names unguessable. Set before anything is cached.
    """
    import gradio.processing_utils as processing

    if not getattr(processing, "_playground_secret_seed", False):
        processing.hash_seed = secrets.token_hex(32).encode("ascii")
        processing._playground_secret_seed = True  # type: ignore[attr-defined]


def forget_gradio_session(request: object) -> None:
    """Drop what Gradio keeps for a tab whose page has gone (its heartbeat ended).

    Gradio keeps a copy of the whole page's configuration for every tab it has seen (its `SessionState`, about 150 KB
    for this page) and only drops one when ten thousand newer tabs have come: a stranger opening tabs in a loop grows
    the server by that much per tab. This page keeps nothing there that a closed tab could want back (a reload is a
    new tab), so the tab's entry goes when its page does.
    """
    try:
        holder = request.request.app.state_holder  # type: ignore[attr-defined]
        with holder.lock:
            holder.session_data.pop(request.session_hash, None)  # type: ignore[attr-defined]
            holder.time_last_used.pop(request.session_hash, None)  # type: ignore[attr-defined]
    except Exception:  # another Gradio than the one this was written for: its own sweep stays the bound
        return
