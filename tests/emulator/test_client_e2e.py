"""The library's SessionsClient end to end against the emulator, in each dialect (contract in sp-contracts.md)."""

from __future__ import annotations

import io
import re

import pytest

from azure_sessions.emulator import Limits, start_emulator

client_module = pytest.importorskip("azure_sessions.client", reason="the client library is not importable yet")


@pytest.fixture(params=["2024-02-02-preview", "2024-10-02-preview", "2025-10-02-preview"])
def client(request, emulator, emulator_token):
    with client_module.SessionsClient(emulator.endpoint, credential=emulator_token, api_version=request.param) as c:
        yield c


def test_client_round_trip(client, tmp_path):
    first = client.execute("import math\nvalue = 6 * 7\nprint('hi')\nvalue")
    assert first.succeeded and first.status == "Succeeded"
    assert (first.stdout, first.result) == ("hi\n", 42)
    assert first.session_guid
    failed = client.execute("1 / 0")
    assert not failed.succeeded and "ZeroDivisionError" in failed.stderr
    image = client.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    assert image.images and image.images[0].format == "png" and image.result is None

    info = client.upload(io.BytesIO(b"a,b\n1,2\n"), "data.csv")
    assert info.name == "data.csv" and info.size == 8 and info.path == "/mnt/data/data.csv"
    assert "data.csv" in {f.name for f in client.list_files()}
    assert client.read_bytes("data.csv") == b"a,b\n1,2\n"
    assert client.execute("open('/mnt/data/data.csv').read()").result == "a,b\n1,2\n"
    target = tmp_path / "copy.csv"
    assert client.download("data.csv", target) == 8 and target.read_bytes() == b"a,b\n1,2\n"
    assert client.file_info("data.csv").size == 8
    client.delete_file("data.csv")
    assert "data.csv" not in {f.name for f in client.list_files()}

    session = client.get_session()
    assert session.identifier == client.identifier
    client.delete_session()
    fresh = client.execute("'value' in dir()")
    assert fresh.result is False and fresh.session_guid != first.session_guid
    client.delete_session()


def test_an_image_over_the_limit_is_left_out_and_stderr_says_so():
    """An image larger than ``Limits.image_mb`` never reaches the host's memory as a reply: the result leaves it out,
    stderr names its size and what to do, and a smaller one still comes back."""
    with (
        start_emulator(token="t", prestart=1, limits=Limits(image_mb=1)) as emu,
        client_module.SessionsClient(emu.endpoint, credential="t") as c,
    ):
        noise = (
            "import numpy as np, matplotlib.pyplot as plt\n"
            "fig = plt.figure(figsize=(SIDE / 100, SIDE / 100), dpi=100)\n"
            "fig.figimage(np.random.default_rng(0).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))\n"
            "plt.show()"
        )
        large = c.execute(noise.replace("SIDE", "1000"))  # ~3 MB as PNG: noise does not compress
        assert large.succeeded and not large.images
        assert re.search(r"ImageTooLarge: the image \(10\d\d×10\d\d pixels\) is [3-9]\.\d MB as PNG", large.stderr)
        assert "returns images up to 1 MiB. Draw it smaller" in large.stderr
        small = c.execute(noise.replace("SIDE", "300"))
        assert small.images and small.images[0].data.startswith(b"\x89PNG") and "ImageTooLarge" not in small.stderr
