"""Where strangers can reach the page (a Space, a public bind) and no isolation tier works, the app runs no code and
says why and what to do; so does the standalone emulator on a non-loopback address.

The host without tiers is real for the child process: a container's seccomp filter that allows no namespaces
(bubblewrap cannot start) and refuses Landlock's calls (see tests/support/locked_down.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.app_process import CHECKOUT, app_process, child_env
from tests.support.locked_down import without_isolation_tiers


@pytest.fixture(scope="module")
def space_app(tmp_path_factory) -> Iterator[str]:
    """app.py as a Space runs it (SPACE_ID set), on a host where no tier works."""
    logs = tmp_path_factory.mktemp("space-app")
    with app_process(logs, locked_down=True, SPACE_ID="someone/sessions-playground") as url:
        yield url
    text = (logs / "app.log").read_text()
    assert "the local sandbox will run no code" in text and "UNISOLATED" not in text


def test_a_space_without_isolation_runs_no_code_and_says_why(space_app: str, page: Page) -> None:
    page.goto(space_app)
    warning = page.locator("#isolation-warning")
    expect(warning).to_contain_text("This server runs no code.")
    expect(warning).to_contain_text("bubblewrap is unavailable")
    expect(warning).to_contain_text("Landlock is unavailable")
    expect(warning).to_contain_text("AZURE_SESSIONS_POOL_ENDPOINT")
    expect(page.locator("#backend-badge")).to_have_text("No sandbox · code is not run")
    box = page.locator("#chat-input textarea")
    expect(box).to_be_disabled()
    expect(box).to_have_attribute("placeholder", "This server runs no code (see above).")
    expect(page.locator('#session-panel [data-key="Backend"]')).to_contain_text("no isolation tier")
    reason = page.get_by_text("so no code is run", exact=False)
    expect(reason).to_have_count(1)  # the banner
    page.locator("#refresh-btn").click()  # any other action is refused with the same reason, not silently
    expect(reason).to_have_count(2)  # the whole reason: it quotes bubblewrap's "See <https://...>" hint
    expect(page.get_by_test_id("toast-text")).to_contain_text("Configure an Azure dynamic-sessions pool")


def test_the_emulator_refuses_a_public_address_without_isolation() -> None:
    command = [sys.executable, "-m", "azure_sessions.emulator", "--host", "0.0.0.0", "--port", "0", "--token", "t"]
    proc = subprocess.run(command, cwd=CHECKOUT, env=child_env(), capture_output=True, text=True, timeout=60,
                          preexec_fn=without_isolation_tiers())  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "No isolation tier works on this host" in proc.stderr and "no code is run" in proc.stderr
    assert "Landlock is unavailable: Landlock's system calls are refused" in proc.stderr  # the layer that refuses
    assert "seccomp profile" in proc.stderr and "offers no Landlock" not in proc.stderr
    assert "serving" not in proc.stdout
