"""A look inside a file before downloading it: the first rows of a table, an image, the first lines of a text.

Bounded in what it reads and parses, whatever the file: a table or a text is previewed from its first
HEAD_BYTES only (a huge or sparse file costs no more than a small one), and at most PREVIEW_COLUMNS columns are
parsed; formats that need the whole file (Excel, Parquet, images) are previewed only up to WHOLE_FILE_BYTES. Every
failure is a sentence in the preview's caption; a missing optional reader (openpyxl for Excel, fastparquet or
pyarrow for Parquet) says which package would make the preview work.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from playground.formatting import human_size, markdown_escape

log = logging.getLogger(__name__)

PREVIEW_ROWS = 20
PREVIEW_LINES = 40
PREVIEW_COLUMNS = 50
HEAD_BYTES = 256 * 1024
TEXT_SAMPLE_BYTES = 64 * 1024
WHOLE_FILE_BYTES = 16 * 1024 * 1024
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
PARQUET_SUFFIXES = (".parquet", ".pq")
IMAGE_PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
READERS = {  # module -> the package that provides it, for the "install …" hint
    "openpyxl": "openpyxl",
    "xlrd": "xlrd",
    "odf": "odfpy",
    "fastparquet": "fastparquet",
    "pyarrow": "pyarrow",
}


@dataclass
class Preview:
    """What to show: `caption` (markdown) always, and at most one of a table, an image or a text."""

    caption: str
    table: pd.DataFrame | None = None
    image: str | None = None
    text: str | None = None


@dataclass
class Source:
    """The file to preview: its name and size, its first bytes, and (for formats that need it) a local copy."""

    name: str
    size: int | None
    head: Callable[[int], bytes]  # the first n bytes
    whole: Callable[[], Path]  # a local copy of the whole file (asked only when size <= WHOLE_FILE_BYTES)


def local(path: Path, name: str | None = None) -> Source:
    """A file on this machine as a preview source."""

    def head(size: int) -> bytes:
        with path.open("rb") as handle:
            return handle.read(size)

    return Source(name or path.name, path.stat().st_size, head, lambda: path)


def preview(path: Path, name: str | None = None) -> Preview:
    """The preview of the local file `path` (shown under `name`, its name in /mnt/data)."""
    return preview_source(local(path, name))


def preview_source(source: Source) -> Preview:
    """The preview of `source`, reading no more of it than the preview shows. Failing to read the file at all
    (the sandbox's error) is raised; failing to understand it is a sentence in the caption."""
    title = f"**{markdown_escape(source.name)}** · {human_size(source.size)}"
    suffix = Path(source.name).suffix.lower()
    if suffix in EXCEL_SUFFIXES + PARQUET_SUFFIXES + IMAGE_PREVIEW_SUFFIXES:
        if source.size is not None and source.size > WHOLE_FILE_BYTES:
            return Preview(f"{title}  \nNo preview: {_kind(suffix)} is previewed up to {human_size(WHOLE_FILE_BYTES)}; "
                           "download the file to open it.")  # fmt: skip
        path, head, complete = source.whole(), b"", True
    else:
        path, head = None, source.head(HEAD_BYTES + 1)
        complete, head = len(head) <= HEAD_BYTES, head[:HEAD_BYTES]
    try:
        if suffix in EXCEL_SUFFIXES and path is not None:
            return _excel(path, title)
        if suffix in PARQUET_SUFFIXES and path is not None:
            return _parquet(path, title)
        if path is not None:
            return _image(path, title)
        if suffix in TABLE_SUFFIXES:
            return _delimited(head, complete, title, TABLE_SUFFIXES[suffix])
        return _text(head, complete, title)
    except ImportError as exc:
        package = missing_package(exc)
        return Preview(f"{title}  \nNo preview: reading this kind of file needs the `{package}` package, which is "
                       "not installed on this server. Download the file to open it.")  # fmt: skip
    except Exception as exc:  # a preview never breaks the file browser
        log.info("no preview of %s: %s", source.name, exc)
        return Preview(f"{title}  \nNo preview: the file could not be read as {_kind(suffix)} ({_short(exc)}).")


def _delimited(head: bytes, complete: bool, title: str, sep: str) -> Preview:
    """The first rows and at most PREVIEW_COLUMNS columns of a delimited table, from the file's first bytes."""
    data = head if complete else head[: head.rfind(b"\n") + 1]  # whole lines only
    if not data.strip():
        if head.strip():
            return Preview(f"{title}  \nNo preview: its first line is longer than {human_size(HEAD_BYTES)}, too "
                           "wide to preview. Download the file to open it.")  # fmt: skip
        return Preview(f"{title} · empty")
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    columns = len(next(csv.reader([first], delimiter=sep), []))
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            nrows=PREVIEW_ROWS + 1,
            usecols=range(min(columns, PREVIEW_COLUMNS)) if columns > PREVIEW_COLUMNS else None,
            encoding_errors="replace",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        shown = _text(head, complete, title)
        shown.caption += f"  \nShown as text: it does not parse as a table ({_short(exc)})."
        return shown
    shown = _table(frame, title, more_rows=not complete)
    if columns > PREVIEW_COLUMNS:
        shown.caption = shown.caption.replace(
            f"{frame.shape[1]} columns", f"first {frame.shape[1]} of {columns:,} columns"
        )
    return shown


def _excel(path: Path, title: str) -> Preview:
    with pd.ExcelFile(path) as book:
        sheets = book.sheet_names
        frame = pd.read_excel(book, sheet_name=sheets[0], nrows=PREVIEW_ROWS + 1) if sheets else pd.DataFrame()
    shown = _table(frame, title)
    if len(sheets) > 1:
        shown.caption += f" · sheet “{markdown_escape(str(sheets[0]))}” of {len(sheets)}"
    return shown


def _parquet(path: Path, title: str) -> Preview:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from fastparquet import ParquetFile

        parquet = ParquetFile(str(path))
        return _table(parquet.head(PREVIEW_ROWS), title, total=parquet.count())
    parquet_file = pq.ParquetFile(path)
    batch = next(parquet_file.iter_batches(batch_size=PREVIEW_ROWS), None)
    frame = batch.to_pandas() if batch is not None else parquet_file.schema_arrow.empty_table().to_pandas()
    return _table(frame, title, total=parquet_file.metadata.num_rows)


def _table(frame: pd.DataFrame, title: str, total: int | None = None, more_rows: bool = False) -> Preview:
    more = (
        (len(frame) > PREVIEW_ROWS or (more_rows and len(frame) >= PREVIEW_ROWS))
        if total is None
        else total > PREVIEW_ROWS
    )
    frame = frame.head(PREVIEW_ROWS)
    if total is not None and more:
        rows = f"first {len(frame)} of {total:,} rows"
    else:
        rows = f"first {len(frame)} rows" if more else f"{len(frame)} row{'s' if len(frame) != 1 else ''}"
    columns = f"{frame.shape[1]} column{'s' if frame.shape[1] != 1 else ''}"
    shown = frame.astype(object).where(pd.notna(frame), "").astype(str)
    shown.columns = [str(column) for column in frame.columns]
    return Preview(f"{title} · {rows} · {columns}", table=shown)


def _image(path: Path, title: str) -> Preview:
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        image.verify()
    return Preview(f"{title} · {width}×{height} pixels", image=str(path))


def _text(head: bytes, complete: bool, title: str) -> Preview:
    sample = head[:TEXT_SAMPLE_BYTES]
    text = sample.decode("utf-8", errors="replace")
    if b"\x00" in sample or text.count("\ufffd") > max(8, len(text) // 100):
        return Preview(f"{title}  \nNo preview for this binary file; download it to open it.")
    lines = text.splitlines()
    truncated = len(lines) > PREVIEW_LINES or len(sample) == TEXT_SAMPLE_BYTES or not complete
    shown = "\n".join(lines[:PREVIEW_LINES])
    count = f"first {min(len(lines), PREVIEW_LINES)} lines" if truncated else f"{len(lines)} lines"
    return Preview(f"{title} · {count}", text=shown)


def missing_package(exc: ImportError) -> str:
    """The package to install for a reader that is missing (pandas names it in its message, Python in `name`)."""
    found = re.search(r"optional dependency '([\w.-]+)'|`Import ([\w.-]+)`", str(exc))
    module = ((found.group(1) or found.group(2)) if found else exc.name or "").split(".")[0]
    return READERS.get(module, module or "a reader")


def _kind(suffix: str) -> str:
    if suffix in EXCEL_SUFFIXES:
        return "an Excel workbook"
    if suffix in PARQUET_SUFFIXES:
        return "a Parquet file"
    if suffix in IMAGE_PREVIEW_SUFFIXES:
        return "an image"
    return "a table" if suffix in TABLE_SUFFIXES else "text"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
