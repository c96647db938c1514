"""A streamed ``multipart/form-data`` body with one ``file`` part: never holds the file in memory."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

from .errors import MAX_UPLOAD_BYTES, FileTooLargeError, SessionsError

CHUNK_BYTES = 256 * 1024


def _too_large(size: int | str) -> FileTooLargeError:
    return FileTooLargeError(
        f"the file is {size} bytes; the service accepts uploads up to 128 MiB ({MAX_UPLOAD_BYTES} bytes). "
        "Split or compress it before uploading."
    )


def _quote_filename(filename: str) -> str:
    # HTML5 form encoding, as browsers and urllib3 do: the value stays UTF-8, quotes are percent-escaped.
    return filename.replace("\\", "\\\\").replace('"', "%22")


class UploadSource:
    """An open binary stream to upload, its start offset and size (None when it cannot be known).

    :param source: a path, or a binary file object (read from its current position).
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        self._owned = False
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            size = os.stat(path).st_size
            if size > MAX_UPLOAD_BYTES:
                raise _too_large(size)  # refused before the file is even opened
            self.stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
            self._owned = True
            self.default_name: str | None = os.path.basename(path)
        elif hasattr(source, "read"):
            self.stream = source
            raw_name = getattr(source, "name", None)
            self.default_name = os.path.basename(raw_name) if isinstance(raw_name, str) and raw_name else None
        else:
            raise TypeError(f"upload source must be a path or a binary file object, not {type(source).__name__}")
        self.start, self.size = self._measure(self.stream)
        if self.size is not None and self.size > MAX_UPLOAD_BYTES:
            self.close()
            raise _too_large(self.size)

    @staticmethod
    def _measure(stream: BinaryIO) -> tuple[int | None, int | None]:
        try:
            if not stream.seekable():
                return None, None
            start = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(start)
        except (AttributeError, OSError, ValueError):
            return None, None
        return start, max(0, end - start)

    @property
    def rewindable(self) -> bool:
        """True when the body can be sent again (a retry can rewind it)."""
        return self.start is not None

    def close(self) -> None:
        if self._owned:
            self.stream.close()

    def body(self, filename: str) -> MultipartBody:
        """A fresh multipart body starting at the source's start offset."""
        if self.start is not None:
            self.stream.seek(self.start)
        cls = MultipartBody if self.size is None else SizedMultipartBody
        return cls(self.stream, filename, self.size)


class MultipartBody:
    """Iterable body for ``requests`` (``data=``): header bytes, the file in chunks, the closing boundary.

    With a known size it has ``len()``, so requests sends a ``Content-Length``; otherwise requests uses chunked
    transfer encoding and the 128 MiB limit is enforced while streaming.
    """

    def __init__(self, stream: BinaryIO, filename: str, size: int | None) -> None:
        self.boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{_quote_filename(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._stream = stream
        self._size = size

    def length(self) -> int | None:
        return None if self._size is None else len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        remaining = self._size
        sent = 0
        while remaining is None or remaining > 0:
            chunk = self._stream.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            sent += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            elif sent > MAX_UPLOAD_BYTES:
                raise _too_large(f"more than {MAX_UPLOAD_BYTES}")
            yield chunk
        if remaining:
            raise SessionsError(f"the file shrank while it was being uploaded ({remaining} bytes missing)")
        yield self._tail


class SizedMultipartBody(MultipartBody):
    """A :class:`MultipartBody` of known size (``len()`` works, so requests sets ``Content-Length``)."""

    def __len__(self) -> int:
        return self.length() or 0
