"""File previews over local files: tables, images, text, binaries, and a clear message when a reader is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from playground.preview import preview


def test_tables_show_their_first_rows(tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n" + "".join(f"{n},{n}\n" for n in range(30)))
    shown = preview(csv)
    assert shown.table is not None and len(shown.table) == 20 and "first 20 rows · 2 columns" in shown.caption
    small = tmp_path / "s.tsv"
    small.write_text("k\tv\nx\t1\n")
    assert preview(small).table.values.tolist() == [["x", "1"]]
    parquet = tmp_path / "p.parquet"
    pd.DataFrame({"n": range(50)}).to_parquet(parquet)
    assert "first 20 of 50 rows" in preview(parquet).caption
    book = tmp_path / "b.xlsx"
    with pd.ExcelWriter(book) as writer:
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="one", index=False)
        pd.DataFrame({"y": [2]}).to_excel(writer, sheet_name="two", index=False)
    assert "sheet “one” of 2" in preview(book).caption


def test_images_text_and_binaries(tmp_path: Path):
    png = tmp_path / "i.png"
    Image.new("RGB", (5, 3)).save(png)
    assert preview(png).image == str(png) and "5×3 pixels" in preview(png).caption
    text = tmp_path / "notes.md"
    text.write_text("".join(f"l{n}\n" for n in range(100)))
    assert preview(text).text.splitlines()[-1] == "l39"
    blob = tmp_path / "x.bin"
    blob.write_bytes(bytes(range(256)))
    assert "binary" in preview(blob).caption and preview(blob).text is None


def test_a_file_that_does_not_parse_says_so(tmp_path: Path):
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a workbook")
    shown = preview(broken)
    assert shown.table is None and "could not be read as an Excel workbook" in shown.caption
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('a,b\n1,2\n"unterminated\n')
    assert preview(ragged).text is not None or preview(ragged).table is not None


def test_a_missing_reader_names_the_package_to_install(tmp_path: Path, monkeypatch):
    book = tmp_path / "b.xlsx"
    pd.DataFrame({"x": [1]}).to_excel(book, index=False)
    parquet = tmp_path / "p.parquet"
    pd.DataFrame({"n": [1]}).to_parquet(parquet)
    for module in ("openpyxl", "fastparquet", "pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    excel = preview(book)
    assert excel.table is None and "needs the `openpyxl` package" in excel.caption
    assert "needs the `fastparquet` package" in preview(parquet).caption
