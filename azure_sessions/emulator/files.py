"""A session's ``/mnt/data`` on the host: name validation and symlink-proof file operations.

Every operation walks the path one component at a time with ``O_NOFOLLOW`` directory fds starting from the session
directory, so neither ``..`` nor a symlink planted by sandboxed code can lead outside it (no check-then-use race).
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import MAX_UPLOAD_BYTES
from . import errors

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MNT = "/mnt/data"


@dataclass(frozen=True)
class FileEntry:
    name: str  # the last component
    directory: str  # the parent, relative to /mnt/data ("" at the top)
    size: int
    modified: float
    is_dir: bool

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.name}" if self.directory else self.name

    @property
    def content_type(self) -> str:
        if self.is_dir:
            return ""
        guessed = mimetypes.guess_type(self.name)[0] or "application/octet-stream"
        return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _strip_mnt(raw: str) -> str:
    if raw == _MNT or raw == _MNT + "/":
        return ""
    if raw.startswith(_MNT + "/"):
        return raw[len(_MNT) + 1 :]
    return raw


def split_path(name: str | None, directory: str | None = None, *, allow_root: bool = False) -> list[str]:
    """Validate a client-supplied name (plus optional ``path`` directory) into components under /mnt/data."""
    parts: list[str] = []
    for label, raw in (("path", directory), ("name", name)):
        if raw is None:
            continue
        if "\x00" in raw:
            raise errors.invalid_file_name(raw, "it contains a NUL character")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
            raise errors.invalid_file_name(raw, "it contains a control character")
        if "\\" in raw:
            raise errors.invalid_file_name(raw, "it contains a backslash")
        stripped = _strip_mnt(raw)
        if label == "path" and stripped in ("", "/", "."):
            continue
        if stripped.startswith("/"):
            raise errors.invalid_file_name(raw, "it is an absolute path outside /mnt/data")
        for part in stripped.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise errors.invalid_file_name(raw, "it contains '..'")
            if len(part.encode("utf-8", "surrogatepass")) > 255:
                raise errors.invalid_file_name(raw, "a path segment is longer than 255 bytes")
            parts.append(part)
    if not parts and not allow_root:
        raise errors.invalid_file_name(name or "", "it is empty")
    if len("/".join(parts)) > 4000:
        raise errors.invalid_file_name(name or "", "it is too long")
    return parts


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (a named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def refuse(name: str, mode: int) -> errors.EmulatorError:
    """The error for an entry that is not a regular file: a link (never followed), or another kind of file."""
    if stat.S_ISLNK(mode):
        return errors.link_not_followed(name)
    return errors.not_a_regular_file(name, _KINDS.get(stat.S_IFMT(mode), "not a regular file"))


def _refuse_at(dfd: int, part: str, name: str) -> errors.EmulatorError:
    """The error for ``part`` in the directory ``dfd``, which could not be opened as what was asked."""
    try:
        return refuse(name, os.stat(part, dir_fd=dfd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return errors.file_not_found(name)


@contextlib.contextmanager
def open_dir(root: Path, parts: list[str], *, create: bool = False, uid: int | None = None) -> Iterator[int]:
    """A directory fd for root/parts, refusing symlinks at every step; optionally creating missing directories."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for depth, part in enumerate(parts, start=1):
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise errors.file_not_found("/".join(parts)) from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if uid is not None:
                        os.chown(part, uid, uid, dir_fd=fd, follow_symlinks=False)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:  # O_DIRECTORY|O_NOFOLLOW on a symlink also lands here
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise errors.link_not_followed("/".join(parts[:depth])) from None
                raise errors.file_not_found("/".join(parts)) from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EMLINK):
                    raise errors.link_not_followed("/".join(parts[:depth])) from None
                raise
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _entry(parts: list[str], st: os.stat_result) -> FileEntry:
    return FileEntry(parts[-1], "/".join(parts[:-1]), st.st_size, st.st_mtime, stat.S_ISDIR(st.st_mode))


def _lstat_existing(dfd: int, parts: list[str]) -> os.stat_result:
    """The entry itself (never a link's target) in the open directory ``dfd``; 404 when it does not exist."""
    try:
        return os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        raise errors.file_not_found("/".join(parts)) from None


def stat_file(root: Path, parts: list[str]) -> FileEntry:
    with open_dir(root, parts[:-1]) as dfd:
        st = _lstat_existing(dfd, parts)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise refuse("/".join(parts), st.st_mode)
    return _entry(parts, st)


def open_for_read(root: Path, parts: list[str]) -> tuple[int, FileEntry]:
    """An fd on a regular file (never through a symlink) and its entry; the caller closes the fd."""
    with open_dir(root, parts[:-1]) as dfd:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            raise errors.file_not_found("/".join(parts)) from None
        except OSError as exc:  # ELOOP: a link; ENXIO: a socket (which cannot be opened)
            if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO):
                raise _refuse_at(dfd, parts[-1], "/".join(parts)) from None
            raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise refuse("/".join(parts), st.st_mode)
    return fd, _entry(parts, st)


def list_dir(root: Path, parts: list[str], recursive: bool = False) -> list[FileEntry]:
    """Regular files and directories under root/parts (symlinks and special files are not listed)."""
    found: list[FileEntry] = []
    with open_dir(root, parts) as dfd:
        pending: list[tuple[int, list[str], bool]] = [(os.dup(dfd), parts, True)]
        while pending:
            fd, where, _ = pending.pop()
            try:
                for name in sorted(os.listdir(fd)):
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                        continue
                    found.append(_entry([*where, name], st))
                    if recursive and stat.S_ISDIR(st.st_mode):
                        with contextlib.suppress(OSError):
                            pending.append((os.open(name, _DIR_FLAGS, dir_fd=fd), [*where, name], True))
            finally:
                os.close(fd)
    base = len(parts)
    return [
        FileEntry(e.name, "/".join(e.directory.split("/")[base:]) if e.directory else "", e.size, e.modified, e.is_dir)
        for e in sorted(found, key=lambda e: (e.directory, e.name))
    ]


def delete(root: Path, parts: list[str]) -> None:
    import shutil

    with open_dir(root, parts[:-1]) as dfd:
        st = _lstat_existing(dfd, parts)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=dfd)
        else:
            os.unlink(parts[-1], dir_fd=dfd)


class Upload:
    """A staged upload: bytes go to a hidden file outside /mnt/data, then an atomic rename publishes it."""

    def __init__(self, staging_dir: Path, limit: int = MAX_UPLOAD_BYTES) -> None:
        staging_dir.mkdir(parents=True, exist_ok=True)
        self.path = staging_dir / f"upload-{uuid.uuid4().hex}"
        self.limit = limit
        self.size = 0
        self.too_large = False
        self._fh = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed in finish()/discard()

    def write(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.too_large = True
            self._fh.truncate(0)
            return
        view = memoryview(data)
        while view:
            view = view[self._fh.write(view) :]

    def publish(self, root: Path, parts: list[str], uid: int | None) -> FileEntry:
        self._fh.close()
        if uid is not None:
            os.chown(self.path, uid, uid)
        os.chmod(self.path, 0o644)
        with open_dir(root, parts[:-1], create=True, uid=uid) as dfd:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise refuse("/".join(parts), st.st_mode)
            os.rename(self.path, parts[-1], dst_dir_fd=dfd)
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        return _entry(parts, st)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class IncomingFile:
    """An upload on its way into one session's ``/mnt/data``: the multipart part's name is checked when its headers
    arrive, its bytes are staged outside the session, and :meth:`publish` moves it in at once. ``limit``: the upload
    limit; ``disk``: the bytes the session's files hold and its disk budget (None: no budget), whose room left
    limits the upload where it is less."""

    def __init__(self, root: Path, uid: int | None, directory: str | None, staging_dir: Path, limit: int,
                 disk: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.root = root
        self.uid = uid
        self.directory = directory
        self.staging_dir = staging_dir
        self.limit = limit
        self.disk = disk if disk is not None and disk[1] - disk[0] < limit else None
        self.parts: list[str] = []
        self.upload: Upload | None = None

    def open(self, filename: str) -> Upload:
        """The staging file for the part named ``filename`` (400 now when the name is refused)."""
        self.parts = split_path(filename, self.directory)
        self.upload = Upload(self.staging_dir, self.limit if self.disk is None else self.disk[1] - self.disk[0])
        return self.upload

    def too_large(self) -> errors.EmulatorError:
        """Why the upload was refused for its size: past the upload limit, or past the room its disk budget left."""
        if self.disk is None:
            return errors.payload_too_large(self.limit)
        return errors.disk_budget_exceeded(*self.disk, upload=True)

    def publish(self) -> FileEntry:
        if self.upload is None:
            raise errors.invalid_body("The multipart body has no part named 'file'.")
        return self.upload.publish(self.root, self.parts, self.uid)

    def discard(self) -> None:
        if self.upload is not None:
            self.upload.discard()


def iso_time(timestamp: float) -> str:
    """.NET-style UTC timestamp with 7 fractional digits, as the service writes them."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"
