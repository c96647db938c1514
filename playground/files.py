"""A session's files: `FileStore` (the sandbox's /mnt/data through the executor, the server-side scratch directory
for local copies, the upload limit, and the listing every tab shows), and the file browser's table and sentences.

Every operation returns something the page can show; failures become one readable sentence, never a stack trace.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from playground.changes import Changes
from playground.formatting import format_time, human_size

log = logging.getLogger(__name__)

COLUMNS = ["", "Name", "Size", "Modified (UTC)"]
NAME_COLUMN = 1
SELECTED_MARK = "▶"
Snapshot = dict[str, tuple[Any, Any]]


class FileStore:
    """The files of one session. `publish` replaces the listing the pages show and wakes every tab of the session;
    nothing else writes it. `executor` is the session's sandbox (replaced by Reset sandbox)."""

    def __init__(self, executor: Any, max_upload_bytes: int, changes: Changes) -> None:
        self.executor = executor
        self.max_upload_bytes = max_upload_bytes
        self.files: list[Any] = []
        self.version = 0  # bumped by every publish: a page redraws its table when it changed
        self._changes = changes
        self._scratch = Path(tempfile.mkdtemp(prefix="playground-"))
        self._numbers = itertools.count(1)

    @property
    def scratch(self) -> Path:
        """The server-side directory of this session's local copies (previews, attachments, exports)."""
        return self._scratch

    def new_dir(self, prefix: str) -> Path:
        """A fresh directory under the scratch directory (keeps original file names unique per use)."""
        path = self._scratch / f"{prefix}-{next(self._numbers)}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- the listing --------------------------------------------------------------------------------------------
    def publish(self, files: list[Any]) -> None:
        """Make `files` the listing every tab of the session shows."""
        with self._changes:
            self.files = files
            self.version += 1
        self._changes.bump()

    def refresh(self) -> tuple[list[Any], str | None]:
        """List /mnt/data and publish it: (files, None), or ([], a sentence) when listing failed (the previous
        listing stays)."""
        try:
            files = list(self.executor.list_files())
        except Exception as exc:
            log.warning("listing files failed: %s", exc)
            return [], "Could not list /mnt/data: " + describe_error(exc).split(": ", 1)[-1]
        self.publish(files)
        return files, None

    # ---- operations ---------------------------------------------------------------------------------------------
    def upload(self, paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
        """Upload local files to /mnt/data under their own names. Returns (uploaded names, readable refusals)."""
        uploaded, refused = [], []
        limit = self.max_upload_bytes
        for path in paths:
            name = Path(path).name
            try:
                size = os.path.getsize(path)
                if size > limit:
                    refused.append(f"“{name}” is too large ({human_size(size)}); the limit is {human_size(limit)}.")
                    continue
                self.executor.upload_file(str(path), name)
                uploaded.append(name)
            except Exception as exc:
                refused.append(describe_error(exc, name))
        return uploaded, refused

    def fetch(self, name: str) -> Path:
        """Download /mnt/data/<name> into a fresh directory of the scratch directory (same name, same bytes)."""
        target = self.new_dir("download") / Path(name).name
        self.executor.download_file(name, str(target))
        return target

    def delete(self, name: str) -> None:
        self.executor.delete_file(name)

    def remove_scratch(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


# ---- the file browser's table -------------------------------------------------------------------------------------
def table(files: Iterable[Any], selected: str | None = None) -> pd.DataFrame:
    """Mark / name / size / modified rows, sorted by name; directories are left out. The selected file's row is
    marked by name, so the mark follows the file whatever the listing's order."""
    rows = [
        [SELECTED_MARK if f.name == selected else "", f.name, human_size(f.size), format_time(f.modified)]
        for f in sorted(files, key=lambda f: f.name.lower())
        if getattr(f, "type", "file") != "directory"
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def file_names(files: Iterable[Any]) -> set[str]:
    return {f.name for f in files if getattr(f, "type", "file") != "directory"}


def empty_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=COLUMNS)


def snapshot(files: Iterable[Any]) -> Snapshot:
    return {f.name: (f.size, f.modified) for f in files if getattr(f, "type", "file") != "directory"}


def changed_names(before: Snapshot, after: Snapshot) -> list[str]:
    """Files that are new in `after` or whose size or modification time changed."""
    return sorted(name for name, state in after.items() if before.get(name) != state)


# ---- sentences ----------------------------------------------------------------------------------------------------
def describe_error(exc: BaseException, name: str | None = None) -> str:
    """One readable sentence for a failed file operation."""
    from azure_sessions.errors import FileTooLargeError, InvalidFileNameError, NotFoundError, SessionsError

    subject = f"“{name}”" if name else "The file"
    if isinstance(exc, InvalidFileNameError):
        return f"{subject} was refused: {_message(exc)}"
    if isinstance(exc, FileTooLargeError):
        return f"{subject} is too large: the sandbox accepts files up to 128 MB."
    if isinstance(exc, NotFoundError):
        return f"{subject} is no longer in /mnt/data."
    if isinstance(exc, SessionsError):
        return f"{subject}: the sandbox service refused the request ({_message(exc)})."
    if isinstance(exc, OSError):
        return f"{subject}: {exc.strerror or exc}."
    return f"{subject}: {type(exc).__name__}: {exc}"


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).rstrip(".")


def upload_report(uploaded: Sequence[str], refused: Sequence[str]) -> str:
    parts = []
    if uploaded:
        parts.append("Uploaded " + ", ".join(f"`{n}`" for n in uploaded) + " to /mnt/data.")
    parts.extend(f"⚠️ {reason}" for reason in refused)
    return "\n\n".join(parts)
