"""File-browser helpers: table rows, change detection, readable errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from azure_sessions import FileInfo
from azure_sessions.errors import FileTooLargeError, InvalidFileNameError, NotFoundError, error_from_response
from playground.files import SERVICE_FULL, changed_names, describe_error, snapshot, table
from playground.formatting import human_size


def test_table_rows_are_sorted_and_readable():
    moment = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    df = table([FileInfo("b.csv", 2048, moment), FileInfo("A.txt", 5, None)])
    assert df.values.tolist() == [["", "A.txt", "5 B", ""], ["", "b.csv", "2.0 KB", "2024-05-01 12:30:00"]]
    marked = table([FileInfo("b.csv", 2048, moment), FileInfo("A.txt", 5, None)], selected="b.csv")
    assert marked.values.tolist()[1][:2] == ["▶", "b.csv"] and marked.values.tolist()[0][0] == ""
    assert human_size(None) == "?" and human_size(3 * 1024**3) == "3.0 GB"


def test_changed_names_finds_new_and_modified_files():
    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    before = snapshot([FileInfo("a", 1, t1), FileInfo("b", 1, t1)])
    after = snapshot([FileInfo("a", 1, t1), FileInfo("b", 2, t2), FileInfo("c", 1, t2)])
    assert changed_names(before, after) == ["b", "c"]


def test_errors_become_one_sentence():
    assert "refused" in describe_error(InvalidFileNameError("name contains '..'"), "../x")
    assert "128 MB" in describe_error(FileTooLargeError("too big", status_code=413), "big.bin")
    assert "no longer" in describe_error(NotFoundError("gone", status_code=404), "x")
    assert "Traceback" not in describe_error(RuntimeError("boom"))


def test_a_link_or_a_full_service_is_said_as_what_it_is_not_as_a_refused_request():
    reason = "'x' is a link: links are not followed. Delete the link or write a regular file instead."
    body = json.dumps({"error": {"code": "LinkNotFollowed", "message": reason}})
    link = error_from_response(409, {}, body, operation="download", target="x")
    assert describe_error(link, "x") == reason  # the sandbox's reason, not "check the api-version"
    full = error_from_response(404, {"x-ms-error-code": "MaxConcurrentSessionsReached"}, b"", operation="download")
    assert describe_error(full, "x") == SERVICE_FULL


def test_a_refused_action_says_why_in_a_toast_that_shows_the_whole_reason():
    import gradio as gr

    from playground.backend import Backend
    from playground.handlers import Handlers
    from playground.model_catalog import ModelCatalog
    from playground.settings import Settings

    settings = Settings()
    reason = "bubblewrap is unavailable: see <https://deb.li/bubblewrap> & its README; so no code is run."
    handlers = Handlers(settings, Backend.refused(reason), ModelCatalog.from_settings(settings, {}))
    with pytest.raises(gr.Error) as refused:
        handlers.refresh_files(None, SimpleNamespace(session_hash="tab"))
    # the toast renders HTML: the reason's "<...>" must show as text, not vanish as a tag
    assert refused.value.message == (
        "This server runs no code. bubblewrap is unavailable: see &lt;https://deb.li/bubblewrap&gt; &amp; its README; "
        "so no code is run."
    )
    assert refused.value.title == "No sandbox" and not refused.value.print_exception
