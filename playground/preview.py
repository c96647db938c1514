"""A look inside a file before downloading it: the first rows of a table, an image, the first lines of a text.

Pure over a local copy of the file (the file browser downloads it on selection). Every failure is a sentence in
the preview's caption; a missing optional reader (openpyxl for Excel, fastparquet or pyarrow for Parquet) says which
package would make the preview work.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from playground.formatting import human_size, markdown_escape

log = logging.getLogger(__name__)

PREVIEW_ROWS = 20
PREVIEW_LINES = 40
TEXT_SAMPLE_BYTES = 64 * 1024
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


def preview(path: Path, name: str | None = None) -> Preview:
    """The preview of the local file `path` (shown under `name`, its name in /mnt/data)."""
    name = name or path.name
    title = f"**{markdown_escape(name)}** · {human_size(path.stat().st_size)}"
    suffix = path.suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            return _delimited(path, title, TABLE_SUFFIXES[suffix])
        if suffix in EXCEL_SUFFIXES:
            return _excel(path, title)
        if suffix in PARQUET_SUFFIXES:
            return _parquet(path, title)
        if suffix in IMAGE_PREVIEW_SUFFIXES:
            return _image(path, title)
        return _text(path, title)
    except ImportError as exc:
        package = missing_package(exc)
        return Preview(f"{title}  \nNo preview: reading this kind of file needs the `{package}` package, which is "
                       "not installed on this server. Download the file to open it.")  # fmt: skip
    except Exception as exc:  # a preview never breaks the file browser
        log.info("no preview of %s: %s", name, exc)
        return Preview(f"{title}  \nNo preview: the file could not be read as {_kind(suffix)} ({_short(exc)}).")


def _delimited(path: Path, title: str, sep: str) -> Preview:
    try:
        frame = pd.read_csv(path, sep=sep, nrows=PREVIEW_ROWS + 1, encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        shown = _text(path, title)
        shown.caption += f"  \nShown as text: it does not parse as a table ({_short(exc)})."
        return shown
    return _table(frame, title)


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


def _table(frame: pd.DataFrame, title: str, total: int | None = None) -> Preview:
    more = len(frame) > PREVIEW_ROWS if total is None else total > PREVIEW_ROWS
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


def _text(path: Path, title: str) -> Preview:
    with path.open("rb") as handle:
        sample = handle.read(TEXT_SAMPLE_BYTES)
    text = sample.decode("utf-8", errors="replace")
    if b"\x00" in sample or text.count("\ufffd") > max(8, len(text) // 100):
        return Preview(f"{title}  \nNo preview for this binary file; download it to open it.")
    lines = text.splitlines()
    truncated = len(lines) > PREVIEW_LINES or len(sample) == TEXT_SAMPLE_BYTES
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
