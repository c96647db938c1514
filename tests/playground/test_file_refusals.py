"""What the file browser says about a file in /mnt/data that the host refuses to read (a link, a FIFO, a socket that
sandboxed code made), against the real emulator: why it refuses and what to do, not a sentence about the request."""

from __future__ import annotations

import pytest

from playground import files as fs
from playground.backend import Backend
from playground.model_catalog import ModelCatalog
from playground.sessions import BrowserSessions
from playground.settings import Settings

MAKE_THEM = (
    "import os, socket\nopen('real.txt', 'w').write('hi')\nos.symlink('real.txt', 'link')\nos.mkfifo('fifo')\n"
    "listener = socket.socket(socket.AF_UNIX)\nlistener.bind('sock')"
)


@pytest.fixture
def store(emulator, emulator_token):
    settings = Settings(idle_timeout=60.0)
    registry = BrowserSessions(
        Backend.for_emulator(emulator, emulator_token), ModelCatalog.from_settings(settings), settings
    )
    session = registry.session("refusals", None)
    session.executor.run_code_raise_errors(MAKE_THEM)
    yield session.store
    registry.close_all()


@pytest.mark.parametrize(
    ("name", "says"),
    [("link", "is a link: links are not followed"), ("fifo", "it is a FIFO"), ("sock", "it is a socket")],
)
def test_a_file_the_host_refuses_to_read_is_said_as_what_it_is(store, name, says) -> None:
    with pytest.raises(Exception) as raised:
        store.head(name, 100)
    sentence = fs.describe_error(raised.value, name)
    assert f"'{name}'" in sentence and says in sentence
    assert "delete" in sentence  # what to do
    assert "api-version" not in sentence and "refused the request" not in sentence
