"""scripts/smoke_page.py, the check behind scripts/docker-smoke.sh, against the real app in a child process: it runs
its cell where the page runs code, and where the page refuses to (a public page on a host without any isolation
tier) it prints the page's reason and what to do, and fails, rather than waiting for a session that never comes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.app_process import CHECKOUT, app_process

pytestmark = pytest.mark.e2e


def smoke(url: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/smoke_page.py", url, *args]
    return subprocess.run(command, cwd=CHECKOUT, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def refusing_app(tmp_path_factory) -> Iterator[str]:
    """As a Space runs it (SPACE_ID set), on a host where no tier works: the page runs no code."""
    with app_process(tmp_path_factory.mktemp("refusing-app"), locked_down=True, SPACE_ID="smoke/playground") as url:
        yield url


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[str]:
    """On loopback with the local sandbox, in the strongest tier this host allows."""
    with app_process(tmp_path_factory.mktemp("app")) as url:
        yield url


def test_a_refusing_page_is_reported_with_its_reason_and_what_to_do(refusing_app: str) -> None:
    result = smoke(refusing_app)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No sandbox · code is not run" in result.stdout
    failure = result.stderr.strip()
    assert failure.startswith("smoke: FAILED: the page runs no code and says: This server runs no code."), failure
    assert "AZURE_SESSIONS_POOL_ENDPOINT" in failure and "What to do:" in failure and "seccomp" in failure
    assert "Traceback" not in failure and "Timeout" not in failure


def test_a_page_that_runs_code_runs_the_cell_without_secrets(app: str) -> None:
    result = smoke(app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: the cell printed '42 " in result.stdout and "secrets in the sandbox: []" in result.stdout
    assert "the cell's round trip through the page" in result.stdout and result.stdout.endswith("smoke: passed\n")


def test_a_page_in_another_tier_than_asked_for_fails(app: str) -> None:
    result = smoke(app, "--tier", "Azure pool")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not in the Azure pool tier asked for" in result.stderr
