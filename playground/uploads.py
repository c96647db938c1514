"""Files browsers uploaded through Gradio's upload route, until the page's event hands them to the sandbox.

Gradio keeps every upload in its cache (until its hourly sweep); here each one is counted against the session
whose page sent it (`UPLOAD_QUOTA`), deleted as soon as it was copied to the sandbox, and deleted with its session
otherwise. A file two sessions uploaded with the same content and name is the same cache file: it goes when the
last of them is done with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

UNCLAIMED_AFTER = 15 * 60.0  # an upload no event used within this time is deleted


@dataclass
class _Held:
    size: int
    owners: dict[str, float] = field(default_factory=dict)  # session digest -> when it uploaded the file


class UploadLedger:
    """Uploaded files by path, with the sessions that hold them."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def held_by(self, digest: str) -> int:
        """Bytes of uploads `digest` holds that no event has used yet."""
        with self._lock:
            return sum(held.size for held in self._held.values() if digest in held.owners)

    def record(self, digest: str, paths: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for path in paths:
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                held = self._held.setdefault(path, _Held(size))
                held.owners[digest] = now

    def owns(self, digest: str, path: str) -> bool:
        with self._lock:
            held = self._held.get(path)
            return held is not None and digest in held.owners

    def done(self, digest: str, paths: list[str]) -> None:
        """`digest` no longer needs `paths`: each file that nobody else holds is deleted (with its Gradio directory)."""
        with self._lock:
            gone = [path for path in paths if self._let_go(digest, path)]
        for path in gone:
            _delete(path)

    def forget(self, digest: str) -> None:
        """The session ended: let go of everything it held."""
        with self._lock:
            gone = [path for path in list(self._held) if self._let_go(digest, path)]
        for path in gone:
            _delete(path)

    def sweep(self, now: float | None = None) -> int:
        """Let go of uploads no event used within UNCLAIMED_AFTER; returns how many files were deleted."""
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = []
            for path, held in list(self._held.items()):
                for digest, since in list(held.owners.items()):
                    if now - since > UNCLAIMED_AFTER:
                        del held.owners[digest]
                if not held.owners:
                    del self._held[path]
                    gone.append(path)
        for path in gone:
            _delete(path)
        return len(gone)

    def _let_go(self, digest: str, path: str) -> bool:
        held = self._held.get(path)
        if held is None or digest not in held.owners:
            return False
        del held.owners[digest]
        if held.owners:
            return False
        del self._held[path]
        return True


def _delete(path: str) -> None:
    try:
        os.unlink(path)
        parent = Path(path).parent
        if not any(parent.iterdir()):
            parent.rmdir()
    except OSError as exc:
        log.debug("could not delete upload %s: %s", path, exc)


PARTIAL_AGE = 5.0  # seconds a partial upload file has not been written to before it counts as abandoned


def sweep_partial_uploads(directory: str | os.PathLike) -> int:
    """Delete what aborted uploads left in Gradio's upload directory: Gradio writes each upload to a temporary file
    at its top level and moves it into a directory of its own once complete, so a regular file at the top level
    that this process no longer has open, and that nothing wrote to lately, is a partial upload. Returns how many
    were deleted."""
    root = Path(directory)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    candidates = [entry for entry in entries if entry.is_file(follow_symlinks=False)]
    if not candidates:
        return 0
    open_now = _open_files()
    now = time.time()
    deleted = 0
    for entry in candidates:
        try:
            if entry.path in open_now or now - entry.stat(follow_symlinks=False).st_mtime < PARTIAL_AGE:
                continue
            os.unlink(entry.path)
            deleted += 1
        except OSError:
            continue
    return deleted


def _open_files() -> set[str]:
    found = set()
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in descriptors:
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found
