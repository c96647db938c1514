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


class PathMap:
    """The mapping in force: virtual directory -> real directory, and the session's own real directories."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.own: list[str] = []
        self._pairs_b: list[tuple[bytes, bytes]] = []
        self._own_b: list[bytes] = []
        self._words: re.Pattern[str] | None = None

    def set(self, mapping: dict[str, str], own: list[str]) -> None:
        """Map each ``virtual`` directory of ``mapping`` (``{"/mnt/data": real_dir, …}``) to its real directory;
        paths below ``own`` (the session's real directories, which may lie in the host's ``/tmp``) stay as they are."""
        self.pairs = sorted(((v.rstrip("/"), r.rstrip("/")) for v, r in mapping.items()), key=lambda p: -len(p[0]))
        self.own = [d.rstrip("/") for d in own]
        self._pairs_b = [(os.fsencode(v), os.fsencode(r)) for v, r in self.pairs]
        self._own_b = [os.fsencode(d) for d in self.own]
        self._words = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(v) for v, _ in self.pairs) + r")(?![\w.-])")

    def path(self, path):
        """``path`` with a virtual directory replaced by its real one (anything else unchanged)."""
        if not self.pairs or isinstance(path, int):
            return path
        try:
            raw = os.fspath(path)
        except TypeError:
            return path
        pairs, own = (self._pairs_b, self._own_b) if isinstance(raw, bytes) else (self.pairs, self.own)
        if not raw.startswith(tuple(v for v, _ in pairs)):
            return path
        norm = os.path.normpath(raw)
        if any(_under(norm, real) for real in own):
            return path
        return next((real + norm[len(virtual) :] for virtual, real in pairs if _under(norm, virtual)), path)

    def virtual(self, real_path: str) -> str:
        """The other way round, for ``os.getcwd()``."""
        return next((v + real_path[len(r) :] for v, r in self.pairs if _under(real_path, r)), real_path)

    def command(self, command: str) -> str:
        """A shell command line with whole virtual path words replaced (``/mnt/database`` stays as it is)."""
        if self._words is None:
            return command
        reals = dict(self.pairs)
        return self._words.sub(lambda m: reals[m.group(1)], command)


def _under(path, root) -> bool:
    return path == root or path.startswith(root + (b"/" if isinstance(path, bytes) else "/"))


def install() -> PathMap:
    """Wrap the file APIs once (before IPython or anything else keeps a reference to ``io.open``); they map nothing
    until the returned :class:`PathMap` is ``set`` for a session."""
    import builtins
    import sqlite3

    paths = PathMap()

    def wrap1(func):
        def wrapper(path, *args, **kwargs):
            return func(paths.path(path), *args, **kwargs)

        wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = func.__name__, func.__doc__, func
        return wrapper

    def wrap2(func):
        def wrapper(src, dst, *args, **kwargs):
            return func(paths.path(src), paths.path(dst), *args, **kwargs)

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
        return paths.virtual(real_getcwd())

    def getcwdb() -> bytes:
        return os.fsencode(getcwd())

    os.getcwd, os.getcwdb = getcwd, getcwdb
    return paths
