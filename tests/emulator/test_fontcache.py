"""matplotlib's font list reaches the sandbox template from the server's own cache (built when the image is built),
so a new emulator does not scan the fonts again; a list naming fonts a sandbox cannot read is not used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from azure_sessions import SessionsClient
from azure_sessions.emulator import fontcache, start_emulator
from tests.support.tiers import tier_problem

MARK = "_seeded_by_the_test"  # an attribute matplotlib keeps on the loaded FontManager and never writes back


@pytest.fixture(scope="module")
def font_list(tmp_path_factory) -> Path:
    """A font list built by this environment's matplotlib, marked so that a copy of it can be told from a rebuild."""
    cache = tmp_path_factory.mktemp("mplconfig")
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True,
                   env={"MPLCONFIGDIR": str(cache), "PATH": "/usr/bin:/bin"})  # fmt: skip
    (built,) = cache.glob(fontcache.FONT_LISTS)
    manager = json.loads(built.read_text())
    built.write_text(json.dumps({**manager, MARK: True}))
    return built


def test_a_list_of_system_and_matplotlib_fonts_is_seeded_and_a_list_naming_home_fonts_is_not(
    font_list, tmp_path, monkeypatch
):
    assert fontcache.usable_in_sandbox(font_list)
    monkeypatch.setenv("MPLCONFIGDIR", str(font_list.parent))
    home = tmp_path / "template-home"
    assert fontcache.seed(home) == [home / ".cache" / "matplotlib" / font_list.name]
    assert json.loads((home / ".cache" / "matplotlib" / font_list.name).read_text())[MARK] is True

    foreign = tmp_path / "other-cache"
    foreign.mkdir()
    manager = json.loads(font_list.read_text())
    manager["ttflist"].append({**manager["ttflist"][0], "fname": "/home/someone/.fonts/Private.ttf"})
    (foreign / font_list.name).write_text(json.dumps(manager))
    (foreign / "fontlist-v0.0.0.json").write_text("not json")
    monkeypatch.setenv("MPLCONFIGDIR", str(foreign))
    assert fontcache.seed(tmp_path / "another-home") == []


def test_the_template_uses_the_servers_font_list_and_plots(font_list, monkeypatch):
    tier = "none" if tier_problem("landlock") else "landlock"  # the seeding is the same in both
    monkeypatch.setenv("MPLCONFIGDIR", str(font_list.parent))  # the server's own cache
    with start_emulator(token="fonts", prestart=0, sandbox=tier) as emu:
        with SessionsClient(emu.endpoint, "font-list-check", "fonts") as client:
            result = client.execute(
                "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.title('fonts')\nplt.show()"
            )
        assert result.status == "Succeeded" and len(result.images) == 1, result.stderr
        (kept,) = (emu.data_root / "template" / "home" / ".cache" / "matplotlib").glob(fontcache.FONT_LISTS)
        assert json.loads(kept.read_text()).get(MARK) is True  # read as it was, not built again
