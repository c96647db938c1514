"""How each version renders a cell's value, ``useEmptyKernel``, and the ``type`` of file metadata, version by version.

The 2025-10-02-preview cases are the specification's examples (``CodeExecution_Execute_Result_*.json``); the older
versions keep what the emulator answered before (the live recording has only an empty result).
"""

from __future__ import annotations

import pytest

from tests.emulator.conftest import new_id

NEWEST = "2025-10-02-preview"


@pytest.fixture(scope="module")
def ident() -> str:
    return new_id()


def value(service, identifier: str, code: str, version: str = NEWEST, **fields) -> object:
    response = service.execute(identifier, code, version=version, **fields)
    assert response.status_code in (200, 202), response.text
    return response.json()["result"]["executionResult"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("a = float('nan');a", None),  # CodeExecution_Execute_Result_NaN
        ('a = "nan";a', "nan"),  # CodeExecution_Execute_Result_StringNaN
        ("a = None;a", ""),  # CodeExecution_Execute_Result_None
        ("6 * 7", 42),
        ("2.5", 2.5),
        ("True", True),
        ("float('inf')", None),
        ("import numpy as np; np.float64('nan')", None),
        ("{'a': 1}", "{'a': 1}"),
    ],
)
def test_2025_10_default_rendering(service, ident, code, expected):
    assert value(service, ident, code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("a = float('nan');a", "nan"),  # CodeExecution_Execute_Result_NaN_JupyterFormat
        ('a = "nan";a', "'nan'"),  # CodeExecution_Execute_Result_StringNaN_JupyterFormat
        ("a = None;a", None),  # CodeExecution_Execute_Result_None_JupyterFormat
        ("6 * 7", "42"),
        ("True", "True"),
        ("[1, 'b']", "[1, 'b']"),
    ],
)
def test_2025_10_jupyter_rendering(service, ident, code, expected):
    assert value(service, ident, code, returnJupyterFormatExecutionResult=True) == expected


def test_2025_10_jupyter_rendering_as_the_spec_examples_spell_it(service, ident):
    """Two of the specification's examples send ``returnJupyterFormat``; the emulator reads it too."""
    if service.live:
        pytest.skip("the emulator's own choice: the alias is read only by the emulator")
    assert value(service, ident, "'nan'", returnJupyterFormat=True) == "'nan'"


@pytest.mark.parametrize("version", ["2024-10-02-preview", "2025-02-02-preview"])
def test_older_versions_keep_their_rendering_and_ignore_the_new_fields(service, ident, version):
    assert value(service, ident, "float('nan')", version) == "nan"
    assert value(service, ident, "None", version, returnJupyterFormatExecutionResult=True) == ""
    assert value(service, ident, "'nan'", version, returnJupyterFormatExecutionResult=True) == "nan"


@pytest.mark.parametrize("version", ["2024-02-02-preview", "2024-08-02-preview"])
def test_the_envelope_keeps_its_rendering(service, ident, version):
    response = service.execute(ident, "float('nan')", version=version)
    assert response.json()["properties"]["result"] == "nan"


def test_use_empty_kernel_runs_in_a_namespace_of_its_own(service):
    identifier = new_id()
    assert value(service, identifier, "kept = 41\nimport json\nkept") == 41
    empty = service.execute(identifier, "'kept' in dir(), 'json' in dir()", version=NEWEST, useEmptyKernel=True)
    assert empty.json()["result"]["executionResult"] == "(False, False)"
    guid = empty.headers.get("x-ms-session-guid")
    assert value(service, identifier, "made_there = 1", useEmptyKernel=True) == ""
    assert value(service, identifier, "kept + 1, 'made_there' in dir()") == "(42, False)"
    if guid:
        later = service.execute(identifier, "kept", version=NEWEST)
        assert later.headers.get("x-ms-session-guid") == guid  # the same session, not a new one
    older = service.execute(identifier, "'kept' in dir()", version="2024-10-02-preview", useEmptyKernel=True)
    assert older.json()["result"]["executionResult"] is True  # a field 2024-10-02-preview does not have


def test_use_empty_kernel_keeps_the_session_files(service):
    identifier = new_id()
    assert service.upload(identifier, "kept.txt", b"file", version=NEWEST).status_code == 200
    code = "open('/mnt/data/kept.txt').read()"
    assert value(service, identifier, code, useEmptyKernel=True) == "file"


@pytest.mark.parametrize(
    ("version", "kind"),
    [("2024-10-02-preview", None), ("2025-02-02-preview", "File"), ("2025-10-02-preview", "File")],
)
def test_file_metadata_type_version_by_version(service, version, kind):
    """The live 2024-10 recording has no ``type`` in ``GET files/{name}``; the 2025 specifications require it and
    their examples write ``File`` with a ``contentType``."""
    identifier = new_id()
    assert service.upload(identifier, "meta.txt", b"1234", version=version).status_code == 200
    body = service.request("GET", "files/meta.txt", identifier, version).json()
    assert body["name"] == "meta.txt" and body["sizeInBytes"] == 4
    if kind is None:
        assert "type" not in body and "contentType" not in body
    else:
        assert body["type"] == kind and body["contentType"].startswith("text/plain")
    if version == "2025-10-02-preview":
        assert body["directory"] == ""
