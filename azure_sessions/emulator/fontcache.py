"""matplotlib's font list for the sandbox template, so a new emulator does not scan the fonts again.

The template draws a figure before it serves (``inside/kernel.py``), which makes matplotlib build its font list in the
template's HOME, a fresh directory for every emulator: a fraction of a second at every start of a container. The
Docker image builds that list once, at build time, in the server user's matplotlib cache; ``seed`` copies it into a
template's HOME before the template starts. matplotlib names its own fonts relative to its data directory and the
system's by absolute path: a list that names a font outside ``/usr`` (the user's ``~/.fonts``) is left alone, since
a sandboxed worker could not read that font, and the template builds its own list as before.

Runs on the host side, without importing matplotlib.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

FONT_LISTS = "fontlist-v*.json"
READABLE_IN_EVERY_TIER = ("/usr/",)


def cache_dir(home: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Path:
    """Where matplotlib on Linux keeps its cache for a process with this HOME and environment."""
    environ = os.environ if environ is None else environ
    if environ.get("MPLCONFIGDIR"):
        return Path(environ["MPLCONFIGDIR"])
    return Path(environ.get("XDG_CACHE_HOME") or Path(home, ".cache")) / "matplotlib"


def usable_in_sandbox(font_list: Path) -> bool:
    """Whether every font the list names is matplotlib's own or a system font that every tier can read."""
    try:
        manager = json.loads(font_list.read_text(encoding="utf-8"))
        fonts = [*manager["ttflist"], *manager["afmlist"]]
        names = [str(font["fname"]) for font in fonts]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(not name.startswith("/") or name.startswith(READABLE_IN_EVERY_TIER) for name in names)


def seed(home: Path) -> list[Path]:
    """Copy this process's matplotlib font lists that a sandbox can use into the cache of a process whose HOME is
    ``home`` and whose environment names no other cache (a template's). Returns the files written. A list that cannot
    be copied is left out: the template then builds its own, as it would without this."""
    target = cache_dir(home, {})
    written = []
    # (expanduser, not Path.home(): a uid without a passwd entry and no HOME must not stop the template)
    for font_list in sorted(cache_dir(os.path.expanduser("~")).glob(FONT_LISTS)):
        if usable_in_sandbox(font_list):
            try:
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copyfile(font_list, target / font_list.name)
            except OSError:
                continue
            written.append(target / font_list.name)
    return written
