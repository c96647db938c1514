"""File-browser logic over the executor's file operations on the sandbox's /mnt/data.

Every function returns something the page can show; failures become one readable sentence, never a stack trace.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from playground.sessions import UserSession

log = logging.getLogger(__name__)

COLUMNS = ["", "Name", "Size", "Modified (UTC)"]
NAME_COLUMN = 1
SELECTED_MARK = "▶"
Snapshot = dict[str, tuple[Any, Any]]
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def markdown_escape(text: str) -> str:
    """A file name shown literally in markdown (names may contain `*`, `_`, `[`…)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


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


def list_files(session: UserSession) -> tuple[list[Any], str | None]:
    try:
        return list(session.executor.list_files()), None
    except Exception as exc:
        log.warning("listing files failed: %s", exc)
        return [], "Could not list /mnt/data: " + describe_error(exc).split(": ", 1)[-1]


def upload(session: UserSession, paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """Upload local files to /mnt/data under their own names. Returns (uploaded names, readable refusals)."""
    uploaded, refused = [], []
    limit = session.settings.max_upload_bytes
    for path in paths:
        name = Path(path).name
        try:
            size = os.path.getsize(path)
            if size > limit:
                refused.append(f"“{name}” is too large ({human_size(size)}); the limit is {human_size(limit)}.")
                continue
            session.executor.upload_file(str(path), name)
            uploaded.append(name)
        except Exception as exc:
            refused.append(describe_error(exc, name))
    return uploaded, refused


def upload_report(uploaded: Sequence[str], refused: Sequence[str]) -> str:
    parts = []
    if uploaded:
        parts.append("Uploaded " + ", ".join(f"`{n}`" for n in uploaded) + " to /mnt/data.")
    parts.extend(f"⚠️ {reason}" for reason in refused)
    return "\n\n".join(parts)


def fetch(session: UserSession, name: str) -> Path:
    """Download /mnt/data/<name> into a fresh per-session temp dir (same name, same bytes)."""
    target = session.new_dir("download") / Path(name).name
    session.executor.download_file(name, str(target))
    return target


def delete(session: UserSession, name: str) -> None:
    session.executor.delete_file(name)
