"""Pure text formatters shared by the page's parts: sizes, times, names shown literally in markdown, fenced blocks.

Imports nothing of the playground, so any module may use it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

MAX_SHOWN_CHARS = 20_000
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


def shown_name(name: str) -> str:
    """A file name in a status line: as code, or escaped where a backtick would end the code span."""
    return f"`{name}`" if "`" not in name else markdown_escape(name)


def fence(text: str, lang: str = "") -> str:
    """A fenced block that is always closed and never broken by backticks inside `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text`, or its head and tail around a note of how much was cut when it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    return joined_cut(text[: limit // 2], len(text) - limit, text[-limit // 2 :])


def joined_cut(head: str, cut: int, tail: str) -> str:
    """A text's head and tail around the note that `cut` characters between them are not shown."""
    return head + f"\n… [{cut:,} characters cut] …\n" + tail if cut > 0 else head + tail


def format_tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    if not input_tokens and not output_tokens:
        return ""
    return f"{input_tokens or 0:,} in · {output_tokens or 0:,} out tokens"


def span(seconds: float) -> str:
    """ "40 s", "3 min" (rounded up)."""
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


def plural(count: int, noun: str) -> str:
    """ "1 file", "3 files", "2 sandboxes"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('s', 'x', 'sh', 'ch')) else 's'}"
