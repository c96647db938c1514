"""Streaming multipart/form-data reception: the file part goes straight to disk, memory stays flat."""

from __future__ import annotations

from collections.abc import Callable

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from . import errors
from .files import Upload


class MultipartFile:
    """Feed body chunks; the first part carrying a filename (preferably named ``file``) is written to an Upload.

    ``open_upload(filename)`` validates the name and returns the Upload (or raises EmulatorError).
    """

    def __init__(self, content_type: str | None, open_upload: Callable[[str], Upload]) -> None:
        ctype, params = parse_options_header(content_type or "")
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise errors.invalid_body(
                "Uploads must be multipart/form-data with one part named 'file' that carries a filename."
            )
        self._open_upload = open_upload
        self.upload: Upload | None = None
        self._target: Upload | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self.complete = False
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(params[b"boundary"], callbacks)

    def _part_begin(self) -> None:
        self._headers, self._target = {}, None

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        raw = params.get(b"filename")
        if raw is None or self.upload is not None:
            return
        try:
            filename = raw.decode("utf-8")
        except UnicodeDecodeError:
            filename = raw.decode("latin-1")
        self.upload = self._target = self._open_upload(filename)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target is not None:
            self._target.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        self._target = None

    def _end(self) -> None:
        self.complete = True

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise errors.invalid_body(f"The multipart body is malformed: {exc}") from None

    def finish(self) -> Upload:
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise errors.invalid_body(f"The multipart body is malformed: {exc}") from None
        if self.upload is None:
            raise errors.invalid_body(
                "The multipart body has no file part; send one part named 'file' with a filename."
            )
        if not self.complete:
            raise errors.invalid_body("The multipart body ended early (no closing boundary).")
        return self.upload
