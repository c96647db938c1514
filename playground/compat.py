"""Work-arounds for bugs in dependencies that several simultaneous users trigger."""

from __future__ import annotations

import ast
import functools
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
