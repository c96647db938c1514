"""A session's files: `FileStore` (the sandbox's /mnt/data through the executor, the server-side scratch directory
for local copies, the upload limit, and the listing every tab shows), and the file browser's table and sentences.

Every operation returns something the page can show; failures become one readable sentence, never a stack trace.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from playground.changes import Changes
from playground.formatting import format_time, human_size
from playground.visitors import CapReached

log = logging.getLogger(__name__)

COLUMNS = ["", "Name", "Size", "Modified (UTC)"]
NAME_COLUMN = 1
SELECTED_MARK = "▶"
Snapshot = dict[str, tuple[Any, Any]]
SCRATCH_LIMIT_BYTES = 256 * 1024 * 1024  # local copies one session may hold on the server
SERVICE_FULL = "The sandbox service is full right now; try again in a minute."
"""What a visitor reads when the pool has no sandbox to give (a full pool): nothing they can fix, only wait."""


class TooLarge(Exception):
    """A file is larger than what the server copies of it (`limit` bytes); the message is a sentence."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.message, self.limit = message, limit


class FileStore:
    """The files of one session. `publish` replaces the listing the pages show and wakes every tab of the session;
    nothing else writes it.

    The sandbox is made on first need (`executor`, through `acquire`, which may refuse with a sentence when the
    visitor or the server is at its cap) and given back by `release`; `current` is the sandbox if there is one. The
    scratch directory (local copies: previews, images, attachments, exports) is made on first use, inside Gradio's
    cache directory, so Gradio serves its files without copying them again; it has an unguessable name, holds at most
    SCRATCH_LIMIT_BYTES, and goes with the session."""

    def __init__(
        self, acquire: Callable[[], Any], max_upload_bytes: int, changes: Changes, scratch_root: Path | None = None
    ) -> None:
        self._acquire = acquire
        self.max_upload_bytes = max_upload_bytes
        self.files: list[Any] = []
        self.version = 0  # bumped by every publish: a page redraws its table when it changed
        self._changes = changes
        self._executor: Any = None
        self._acquiring = False
        self._lock = threading.Lock()
        root = Path(scratch_root) if scratch_root is not None else Path(tempfile.gettempdir())
        self._scratch = root / f"playground-{secrets.token_hex(16)}"
        self._numbers = itertools.count(1)
        self._kept: dict[str, collections.deque[Path]] = {}
        self.scratch_bytes = 0

    # ---- the sandbox --------------------------------------------------------------------------------------------
    @property
    def executor(self) -> Any:
        """The session's sandbox, made now if it has none (CapReached when the visitor or the server is at a cap)."""
        with self._lock:
            if self._executor is None:
                self._acquiring = True  # counted as held while the caps decide (see `holding`)
                try:
                    self._executor = self._acquire()
                finally:
                    self._acquiring = False
            return self._executor

    @property
    def current(self) -> Any:
        """The sandbox if the session holds one (never makes one)."""
        return self._executor

    @property
    def has_sandbox(self) -> bool:
        return self._executor is not None

    @property
    def holding(self) -> bool:
        """Holds a sandbox, or is being given one: what the sandbox caps count."""
        return self._executor is not None or self._acquiring

    def release(self) -> Any:
        """Give the sandbox up (the caller deletes it) and empty the listing; the next need makes a new one."""
        with self._lock:
            old, self._executor = self._executor, None
        if old is not None or self.files:
            self.publish([])
        return old

    # ---- the scratch directory ----------------------------------------------------------------------------------
    @property
    def scratch(self) -> Path:
        """The server-side directory of this session's local copies (it exists once something was copied)."""
        return self._scratch

    def new_dir(self, prefix: str, keep: int | None = None) -> Path:
        """A fresh directory under the scratch directory (keeps original file names unique per use). With `keep`,
        only the latest `keep` directories of this prefix are kept (older previews and downloads go)."""
        path = self._scratch / f"{prefix}-{next(self._numbers)}"
        path.mkdir(parents=True, exist_ok=True)
        if keep is not None:
            kept = self._kept.setdefault(prefix, collections.deque())
            kept.append(path)
            while len(kept) > keep:
                self._forget(kept.popleft())
        return path

    def room(self) -> int:
        """Bytes the scratch directory may still take."""
        return max(0, SCRATCH_LIMIT_BYTES - self.scratch_bytes)

    def write(self, path: Path, data: bytes) -> Path:
        """Write `data` (counted against the scratch limit; TooLarge when it does not fit)."""
        if len(data) > self.room():
            raise TooLarge(_no_room(len(data), self.scratch_bytes), self.room())
        path.write_bytes(data)
        self.scratch_bytes += len(data)
        return path

    def _forget(self, directory: Path) -> None:
        freed = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        shutil.rmtree(directory, ignore_errors=True)
        self.scratch_bytes = max(0, self.scratch_bytes - freed)

    def remove_scratch(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
        self.scratch_bytes = 0

    # ---- the listing --------------------------------------------------------------------------------------------
    def publish(self, files: list[Any]) -> None:
        """Make `files` the listing every tab of the session shows."""
        with self._changes:
            self.files = files
            self.version += 1
        self._changes.bump()

    def refresh(self) -> tuple[list[Any], str | None]:
        """List /mnt/data and publish it: (files, None), or ([], a sentence) when listing failed (the previous
        listing stays). A session without a sandbox has no files, and listing them does not make one."""
        executor = self._executor
        if executor is None:
            if self.files:
                self.publish([])
            return [], None
        try:
            files = list(executor.list_files())
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
            except CapReached:
                raise
            except Exception as exc:
                refused.append(describe_error(exc, name))
        return uploaded, refused

    def head(self, name: str, size: int) -> bytes:
        """The first `size` bytes of /mnt/data/<name> (the download stops there: a huge or sparse file costs only
        what is read)."""
        chunks, total = [], 0
        stream = self.executor.client.iter_download(name)
        try:
            for chunk in stream:
                chunks.append(chunk)
                total += len(chunk)
                if total >= size:
                    break
        finally:
            stream.close()
        return b"".join(chunks)[:size]

    def fetch(self, name: str, limit: int, prefix: str = "download", keep: int | None = None) -> Path:
        """Download /mnt/data/<name> into a fresh scratch directory (same name, same bytes), reading at most `limit`
        bytes: TooLarge past it (and nothing is kept)."""
        limit = min(limit, self.room())
        target = self.new_dir(prefix, keep) / Path(name).name
        written = 0
        stream = self.executor.client.iter_download(name)
        try:
            with target.open("wb") as out:
                for chunk in stream:
                    written += len(chunk)
                    if written > limit:
                        raise TooLarge(_no_room(written, self.scratch_bytes), limit)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            stream.close()
        self.scratch_bytes += written
        return target

    def delete(self, name: str) -> None:
        self.executor.delete_file(name)


def _no_room(size: int, used: int) -> str:
    if size > SCRATCH_LIMIT_BYTES - used and used:
        return (
            f"the server keeps at most {human_size(SCRATCH_LIMIT_BYTES)} of copies per session, and this one "
            f"would not fit ({human_size(used)} in use)"
        )
    return f"it is larger than the server copies ({human_size(size)} or more)"


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
    from azure_sessions.errors import (
        FileTooLargeError,
        InvalidFileNameError,
        NotARegularFileError,
        NotFoundError,
        PoolFullError,
        SessionsError,
    )

    subject = f"“{name}”" if name else "The file"
    if isinstance(exc, NotARegularFileError):  # the sandbox's own refusal, which says why and what to do
        reason = exc.reason.strip() or f"{name or 'it'} is not a regular file (a link, a FIFO or a socket)"
        return reason if reason.endswith(".") else reason + "."
    if isinstance(exc, PoolFullError):
        return SERVICE_FULL
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
