"""What made an execution fail, read once from what the service returned: the one parser of tracebacks.

The service reports an exception in the user's code as text in ``stderr`` (an IPython traceback:
``ZeroDivisionError    Traceback (most recent call last)`` ... ``ZeroDivisionError: division by zero``), and the
resource dialect may add an Azure ``error`` object. :func:`execution_error` turns both into an
:class:`~azure_sessions.models.ExecutionError`; every other layer reads its fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .models import ExecutionError

TRACEBACK_HEADER = "Traceback (most recent call last)"
INTERRUPT = "KeyboardInterrupt"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Z]\w*)(?::[ \t]?(.*))?$")
"""An exception's own line, at the start of a line: ``ValueError: boom``, ``pandas.errors.ParserError: ...``,
``KeyboardInterrupt``. Frames, code context and ``Cell In[1], line 1`` never match (they are indented, start with a
dash or a path, or have words after the name)."""
_RULE = re.compile(r"^-{10,}$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
"""Terminal colour codes, which a kernel with colours on writes around names; ignored when reading."""


def execution_error(stderr: str, *, failed: bool, error: Mapping[str, Any] | None = None) -> ExecutionError | None:
    """Why an execution failed, or None when it did not.

    :param stderr: the execution's standard error.
    :param failed: the service reported a failure. A traceback in ``stderr`` counts as a failure even when it did
        not (what the service reports for an exception is not documented).
    :param error: the resource's Azure ``error`` object (``{"code", "message"}``), if any; used when ``stderr``
        names no exception.
    """
    if not failed and TRACEBACK_HEADER not in stderr:
        return None  # the common case, decided without splitting the output
    lines = stderr.splitlines()
    plain = [_ANSI.sub("", line) for line in lines]
    headers = [i for i, line in enumerate(plain) if TRACEBACK_HEADER in line]
    if not (failed or headers):
        return None
    start = headers[0] if headers else 0
    if headers and start > 0 and _RULE.match(plain[start - 1].strip()):
        start -= 1  # IPython's rule above the header belongs to the traceback
    name, value, interrupted = _raised(plain, headers[-1] if headers else None)
    if not name and error:
        name, value = str(error.get("code") or ""), str(error.get("message") or "")
    traceback = "\n".join(lines[start:]).rstrip() if headers else stderr.rstrip()
    return ExecutionError(name=name, value=value, traceback=traceback, interrupted=interrupted)


def _raised(lines: list[str], header: int | None) -> tuple[str, str, bool]:
    """(name, value, interrupted) of the exception that ended the code, the emulator's notice after it (its timeout,
    a lost session) taking its place."""
    region = lines[header + 1 :] if header is not None else lines
    matches = [(i, m) for i, line in enumerate(region) if (m := _EXCEPTION_LINE.match(line))]
    interrupted = any(m.group(1) == INTERRUPT for _, m in matches)
    if header is None:  # no traceback (a SyntaxError, SystemExit, a notice): the last exception line
        return (*_line(region, *matches[-1]), interrupted) if matches else ("", "", interrupted)
    first_word = lines[header].split()[0] if lines[header].strip() else ""
    named = None if lines[header].startswith("Traceback") else first_word.rsplit(".", 1)[-1]
    found = next(((i, m) for i, m in matches if named is None or m.group(1) == named), None)
    if found is None:  # cut off before the exception's line: the header still names it (IPython's form)
        return named or "", "", interrupted or named == INTERRUPT
    name, value = _line(region, *found)
    end = _block_end(region, found[0])
    notices = [(i, m) for i, m in matches if i > end]
    if notices:
        name, value = _line(region, *notices[-1])
    return name, value, interrupted


def _line(region: list[str], index: int, match: re.Match[str]) -> tuple[str, str]:
    """An exception line's name and its value, with the lines that continue a multi-line message."""
    end = _block_end(region, index)
    value = "\n".join([match.group(2) or "", *region[index + 1 : end]]).strip()
    return match.group(1), value


def _block_end(region: list[str], index: int) -> int:
    """The index of the first blank line after ``index`` (the end of that exception's text)."""
    return next((i for i in range(index + 1, len(region)) if not region[i].strip()), len(region))
