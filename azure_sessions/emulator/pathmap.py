"""Unisolated mode only: make Python's file APIs see ``/mnt/data`` as the session directory.

Without a mount namespace there is no real ``/mnt/data``; the worker loads this module (standalone, stdlib only) and
wraps ``open``/``io.open`` and the ``os`` path functions so ``/mnt/data/...`` maps to the session directory and
``os.getcwd()`` maps back. Shell commands (``!ls /mnt/data``) and C code that opens paths itself do not see the
mapping; the working directory is the session directory, so relative paths work everywhere.
"""

from __future__ import annotations

import io
import os

MNT_DATA = "/mnt/data"


def map_mnt_data(real_dir: str) -> None:
    """Unisolated mode: make Python file APIs see ``/mnt/data`` as the session directory (no mount namespace)."""
    import builtins

    real_b = os.fsencode(real_dir)

    def mapped(path):
        if isinstance(path, int):
            return path
        try:
            raw = os.fspath(path)
        except TypeError:
            return path
        if isinstance(raw, bytes):
            if raw.startswith(b"/mnt"):
                norm = os.path.normpath(raw)
                if norm == b"/mnt/data" or norm.startswith(b"/mnt/data/"):
                    return real_b + norm[9:]
            return path
        if raw.startswith("/mnt"):
            norm = os.path.normpath(raw)
            if norm == MNT_DATA or norm.startswith(MNT_DATA + "/"):
                return real_dir + norm[len(MNT_DATA) :]
        return path

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
    real_getcwd, real_getcwdb = os.getcwd, os.getcwdb

    def getcwd() -> str:
        cwd = real_getcwd()
        return MNT_DATA + cwd[len(real_dir) :] if cwd == real_dir or cwd.startswith(real_dir + "/") else cwd

    def getcwdb() -> bytes:
        return os.fsencode(getcwd()) if real_getcwdb().startswith(real_b) else real_getcwdb()

    os.getcwd, os.getcwdb = getcwd, getcwdb
