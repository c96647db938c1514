"""SessionsClient against the local emulator, over real HTTP, for every supported api-version."""

from __future__ import annotations

import io
import os
import threading

import pytest

from azure_sessions import SessionsClient
from azure_sessions.errors import (
    ClientAuthenticationError,
    InterruptNotSupportedError,
    InvalidFileNameError,
    NotFoundError,
    SessionsError,
)
from tests.support.harness import wait_until


def test_execute_output_value_and_state(client):
    first = client.execute("x = 6 * 7\nprint('hello')\nx")
    assert first.succeeded, first.stderr
    assert first.stdout == "hello\n" and first.result == 42
    second = client.execute("x + 1")
    assert second.result == 43
    assert client.execute("y = 1").result is None
    assert first.session_guid is not None and first.session_guid == second.session_guid


def test_execute_traceback_is_failed_result(client):
    result = client.execute("print('before')\n1/0")
    assert result.status == "Failed" and not result.succeeded
    assert result.stdout == "before\n"
    assert "ZeroDivisionError" in result.stderr


def test_execute_unicode(client):
    result = client.execute("s = 'héllo ✓ 日本'\nprint(s)\ns")
    assert result.stdout == "héllo ✓ 日本\n"
    assert "héllo ✓ 日本" in str(result.result)


def test_execute_image_result(client):
    code = (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
    )
    result = client.execute(code)
    assert result.succeeded, result.stderr
    assert result.images and result.images[0].format == "png"
    assert result.images[0].to_pil().size[0] > 10


def test_file_round_trip_binary_and_unicode(client, tmp_path):
    payload = os.urandom(300_000) + "ünïcödé ✓".encode()
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    name = "dätä file (1).bin"
    info = client.upload(src, name)
    assert info.name == name and info.size == len(payload)
    listed = {f.name: f for f in client.list_files()}
    assert listed[name].size == len(payload) and listed[name].modified is not None
    assert client.file_info(f"/mnt/data/{name}").size == len(payload)
    dest = tmp_path / "back.bin"
    assert client.download(name, dest) == len(payload)
    assert dest.read_bytes() == payload
    assert client.read_bytes(name) == payload
    # the code sees the same bytes under /mnt/data
    check = client.execute(f"import hashlib\nhashlib.sha256(open('/mnt/data/{name}', 'rb').read()).hexdigest()")
    import hashlib

    assert check.result.strip("'\"") == hashlib.sha256(payload).hexdigest()
    client.delete_file(name)
    with pytest.raises(NotFoundError):
        client.file_info(name)
    with pytest.raises(NotFoundError):
        client.read_bytes(name)


def test_file_written_by_code_can_be_downloaded(client):
    result = client.execute("open('/mnt/data/made.txt', 'w', encoding='utf-8').write('from code ✓')")
    assert result.succeeded, result.stderr
    assert client.read_bytes("made.txt") == "from code ✓".encode()
    assert "made.txt" in [f.name for f in client.list_files()]


def test_upload_file_object_and_empty_file(client):
    info = client.upload(io.BytesIO(b""), "empty.txt")
    assert info.size == 0
    assert client.read_bytes("empty.txt") == b""


def test_invalid_names_never_reach_the_service(client):
    for bad in ("../escape", "/etc/passwd", "a\x00b", ""):
        with pytest.raises(InvalidFileNameError):
            client.read_bytes(bad)


def test_session_info_and_delete(client):
    client.execute("marker = 'still here'")
    info = client.get_session()
    assert info.identifier == client.identifier
    guid = client.execute("marker").session_guid
    client.delete_session()
    client.delete_session()  # deleting a missing session is fine
    fresh = client.execute("'marker' in dir()")
    assert fresh.result in (False, "False")
    assert fresh.session_guid != guid


def test_a_call_running_when_the_session_ends_cannot_bring_it_back(emulator, make_client, monkeypatch):
    """A run abandoned by Reset sandbox: its cell ends when the session is deleted, and its next call (the agent's
    next step) must not create the session again under the old identifier (a sandbox nobody owns)."""
    monkeypatch.setattr(emulator, "interruptible", False)
    for _ in range(5):  # the old behaviour loses the race about half the time: five rounds catch it
        client = make_client("2024-10-02-preview")
        again: list[str] = []

        def run(client=client, again=again) -> None:
            client.execute("import time\ntime.sleep(60)")
            try:
                client.execute("1")
                again.append("ran")
            except SessionsError:
                again.append("refused")

        runner = threading.Thread(target=run)
        runner.start()
        wait_until(lambda client=client: client.identifier in emulator.session_identifiers())
        client.end()
        runner.join(timeout=30)
        assert again == ["refused"]
        assert client.identifier not in emulator.session_identifiers()


def test_wrong_token_is_authentication_error(make_client, api_version, emulator):
    if emulator.token is None:
        pytest.skip("emulator accepts any token")
    with pytest.raises(ClientAuthenticationError):
        make_client(api_version, credential="wrong-token").execute("1")


def test_interrupt_ends_a_running_execution_and_keeps_the_session(client):
    client.execute("kept = 41")
    assert client.interrupt() is False  # nothing running
    assert client.supports_interrupt is True
    results: list = []
    runner = threading.Thread(
        target=lambda: results.append(client.execute("import time\nfor i in range(60):\n    time.sleep(0.5)"))
    )
    runner.start()
    wait_until(client.interrupt, what="the loop was interrupted")
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert results[0].status == "Failed" and "KeyboardInterrupt" in results[0].stderr
    assert client.execute("kept + 1").result == 42


def test_an_azure_pool_says_it_cannot_interrupt_without_sending_anything():
    azure = SessionsClient(
        "https://eastus.dynamicsessions.io/subscriptions/s/resourceGroups/g/sessionPools/p", credential="unused"
    )
    assert azure.supports_interrupt is False
    with pytest.raises(InterruptNotSupportedError, match="cannot interrupt"):
        azure.interrupt()  # no request: the credential would fail, and nothing listens there


def test_a_service_without_the_interrupt_route_is_detected(emulator, make_client, monkeypatch):
    monkeypatch.setattr(emulator, "interruptible", False)  # answers like the service: no such operation
    client = make_client("2024-10-02-preview")
    with pytest.raises(InterruptNotSupportedError):
        client.interrupt()
    assert client.supports_interrupt is False
    monkeypatch.setattr(emulator, "interruptible", True)
    with pytest.raises(InterruptNotSupportedError):
        client.interrupt()  # remembered: not asked again
