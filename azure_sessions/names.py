"""File names in a session's ``/mnt/data``: validated and quoted on the client, before any request is sent."""

from __future__ import annotations

from urllib.parse import quote

from .errors import InvalidFileNameError

MOUNT_PREFIX = "/mnt/data/"
MAX_SEGMENT_BYTES = 255
MAX_NAME_BYTES = 1024


def normalize_name(name: str) -> str:
    """Validate ``name`` and return it relative to ``/mnt/data``.

    A leading ``/mnt/data/`` is stripped. Refused (:class:`InvalidFileNameError`, nothing sent): empty names,
    ``.`` or ``..`` segments, empty segments (``a//b``), control characters (NUL, CR, LF, ...), lone surrogates
    (not encodable as UTF-8), names still absolute after stripping, segments longer than 255 UTF-8 bytes and
    names longer than 1024 bytes.
    """
    if not isinstance(name, str):
        raise InvalidFileNameError(f"file name must be a str, not {type(name).__name__}")
    relative = name[len(MOUNT_PREFIX) :] if name.startswith(MOUNT_PREFIX) else name
    if not relative or relative == "/mnt/data":
        raise InvalidFileNameError(f"empty file name {name!r}: give a name such as 'data.csv'")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in relative):
        raise InvalidFileNameError(f"file name {name!r} contains a NUL or control character")
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFileNameError(
            f"file name {name!r} is not valid Unicode (it holds a lone surrogate, e.g. from undecodable bytes)"
        ) from None
    if relative.startswith("/"):
        raise InvalidFileNameError(f"file name {name!r} is absolute: only files under /mnt/data can be reached")
    if len(relative.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidFileNameError(f"file name is longer than {MAX_NAME_BYTES} bytes")
    for segment in relative.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidFileNameError(f"file name {name!r} has an empty, '.' or '..' path segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidFileNameError(f"a path segment of {name!r} is longer than {MAX_SEGMENT_BYTES} bytes")
    return relative


def quote_path(relative: str) -> str:
    """Percent-encode each path segment (``safe=""``) of a name :func:`normalize_name` returned, for a URL path."""
    return "/".join(quote(segment, safe="") for segment in relative.split("/"))
