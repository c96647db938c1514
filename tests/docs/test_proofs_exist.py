"""SECURITY.md names the test that proves each promise: every test it names must exist, so a renamed or deleted
test cannot leave a promise standing on nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def named_proofs(document: Path) -> list[tuple[str, str | None]]:
    """(test file, test name or None) for every test the document names in a code span. ``::name`` alone refers to
    the last file named; ``other.py::name`` to a file beside it."""
    proofs: list[tuple[str, str | None]] = []
    current: Path | None = None
    for span in CODE_SPAN.findall(document.read_text(encoding="utf-8")):
        path_part, _, name = span.partition("::")
        if path_part.startswith("tests/") and path_part.endswith(".py"):
            current = Path(path_part)
        elif path_part.endswith(".py") and "/" not in path_part and name and current is not None:
            current = current.parent / path_part
        elif not (span.startswith("::") and current is not None):
            continue
        proofs.append((current.as_posix(), name.split("[")[0] or None))
    return proofs


PROOFS = named_proofs(ROOT / "SECURITY.md")


def test_the_document_names_its_proofs():
    assert len(PROOFS) >= 30


@pytest.mark.parametrize(("path", "name"), PROOFS, ids=[f"{p}::{n or ''}" for p, n in PROOFS])
def test_each_named_proof_exists(path: str, name: str | None):
    source = ROOT / path
    assert source.is_file(), f"SECURITY.md names {path}, which does not exist"
    if name is not None:
        assert re.search(rf"^\s*(async )?def {re.escape(name)}\(", source.read_text(encoding="utf-8"), re.M), (
            f"SECURITY.md names {path}::{name}, which is not defined there"
        )
