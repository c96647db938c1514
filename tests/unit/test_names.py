"""File names are validated and quoted before any request."""

from __future__ import annotations

import pytest

from azure_sessions.errors import InvalidFileNameError, SessionsError
from azure_sessions.names import normalize_name, quote_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("data.csv", "data.csv"),
        ("/mnt/data/data.csv", "data.csv"),
        ("sub/dir/file.txt", "sub/dir/file.txt"),
        ("naïve résumé.txt", "naïve résumé.txt"),
    ],
)
def test_normalize_accepts(name, expected):
    assert normalize_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/mnt/data/",
        "/mnt/data",
        "..",
        "../etc/passwd",
        "a/../../b",
        "a/./b",
        "a//b",
        "/etc/passwd",
        "a\x00b",
        "line\nbreak",
        "x" * 256,
        "é" * 128,
        "/".join(["abc"] * 300),
    ],
)
def test_normalize_refuses(name):
    with pytest.raises(InvalidFileNameError) as info:
        normalize_name(name)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SessionsError)


def test_quote_each_segment_with_nothing_safe():
    assert quote_path(normalize_name("/mnt/data/a b/c?d#e%f.txt")) == "a%20b/c%3Fd%23e%25f.txt"
    assert quote_path(normalize_name("ü&=;.csv")) == "%C3%BC%26%3D%3B.csv"
