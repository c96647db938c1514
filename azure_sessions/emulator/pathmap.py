"""Without a mount namespace (the Landlock tier, the unisolated fallback): make Python's file APIs see ``/mnt/data``
and ``/tmp`` as the session's own directories.

There is no real per-session ``/mnt/data`` there; the worker loads this module (standalone, stdlib only) and wraps
``open``/``io.open``, the ``os`` path functions and ``sqlite3.connect`` so ``/mnt/data/...`` maps to the session
directory (and ``/tmp/...`` to the session's private scratch), and ``os.getcwd()`` maps back. Everything built on them
follows (``pathlib``, pandas, matplotlib, Pillow, numpy). IPython's ``!`` commands get the same paths rewritten in
their text. Other subprocesses and C code that opens paths itself do not see the mapping; the working directory is
the session directory, so relative paths work everywhere.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable


def map_paths(mapping: dict[str, str], own: list[str]) -> Callable[[str], str]:
    """Map each ``virtual`` directory of ``mapping`` (``{"/mnt/data": real_dir, …}``) to its real directory.

    Paths below ``own`` (the session's real directories, which may lie in the host's ``/tmp``) are left alone.
    Returns the rewrite for shell command lines (whole path words only: ``/mnt/database`` stays as it is).
    """
    import builtins
    import sqlite3

    pairs = sorted(((v.rstrip("/"), r.rstrip("/")) for v, r in mapping.items()), key=lambda p: -len(p[0]))
    pairs_b = [(os.fsencode(v), os.fsencode(r)) for v, r in pairs]
    own_s = [d.rstrip("/") for d in own]
    own_b = [os.fsencode(d) for d in own_s]

    def under(path, root) -> bool:
        return path == root or path.startswith(root + (b"/" if isinstance(path, bytes) else "/"))

    def translate(raw, table, real_dirs):
        if not raw.startswith(tuple(v for v, _ in table)):
            return None
        norm = os.path.normpath(raw)
        if any(under(norm, real) for real in real_dirs):
            return None
        return next((real + norm[len(virtual) :] for virtual, real in table if under(norm, virtual)), None)

    def mapped(path):
        if isinstance(path, int):
            return path
        try:
            raw = os.fspath(path)
        except TypeError:
            return path
        real = translate(raw, *((pairs_b, own_b) if isinstance(raw, bytes) else (pairs, own_s)))
        return path if real is None else real

    def wrap1(func):
        def wrapper(path, *args, **kwargs):
            return func(mapped(path), *args, **kwargs)

        wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = func.__name__, func.__doc__, func
        return wrapper

    def wrap2(func):
        def wrapper(src, dst, *args, **kwargs):
            return func(mapped(src), mapped(dst), *args, **kwargs)

        wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = func.__name__, func.__doc__, func
        return wrapper

    opener = wrap1(io.open)
    builtins.open = io.open = opener
    for name in ("open", "stat", "lstat", "listdir", "scandir", "mkdir", "rmdir", "remove", "unlink", "chdir",
                 "access", "chmod", "utime", "truncate", "readlink", "statvfs"):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, wrap1(getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        setattr(os, name, wrap2(getattr(os, name)))
    sqlite3.connect = sqlite3.dbapi2.connect = wrap1(sqlite3.connect)
    real_getcwd = os.getcwd

    def getcwd() -> str:
        cwd = real_getcwd()
        return next((virtual + cwd[len(real) :] for virtual, real in pairs if under(cwd, real)), cwd)

    def getcwdb() -> bytes:
        return os.fsencode(getcwd())

    os.getcwd, os.getcwdb = getcwd, getcwdb

    words = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(v) for v, _ in pairs) + r")(?![\w.-])")
    reals = dict(pairs)
    return lambda command: words.sub(lambda m: reals[m.group(1)], command)
