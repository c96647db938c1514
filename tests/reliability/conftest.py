"""Reliability suite: dedicated emulators (checked for leftovers when they stop) and the soak switch.

Slow cases carry ``@pytest.mark.soak`` and run only with ``--run-soak`` (``make soak``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from azure_sessions.emulator.tiers import BubblewrapTier
from tests.reliability.support import wait_until, worker_processes


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", default=False, help="also run @pytest.mark.soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        run_soak = bool(config.getoption("--run-soak"))
    except ValueError:  # the option is only registered when this directory is on the command line
        run_soak = False
    if run_soak:
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak` (pytest -m soak --run-soak tests/reliability)")
    for item in items:
        if "soak" in item.keywords and "tests/reliability" in item.nodeid.replace("\\", "/"):
            item.add_marker(skip)


def assert_stopped_cleanly(emu: Any) -> None:
    """After ``stop()``: no worker process of this emulator is alive and its data root is gone."""
    leftovers = wait_until(lambda: not worker_processes(emu) and ["none"], timeout=20, what="worker processes exit")
    assert leftovers == ["none"]
    assert not Path(emu.data_root).exists(), f"{emu.data_root} was not removed"


@contextmanager
def checked_emulator(**kwargs: Any) -> Iterator[Any]:
    """A dedicated emulator (``start_emulator(**kwargs)``), stopped on exit and checked for orphan processes and
    files (the check is skipped when the body raised, so it never hides the real failure)."""
    from azure_sessions.emulator import start_emulator

    emu = start_emulator(**kwargs)
    try:
        yield emu
    finally:
        emu.stop()
    assert_stopped_cleanly(emu)


@pytest.fixture
def start_emulator_checked() -> Iterator[Callable[..., Any]]:
    """Start dedicated emulators; each is stopped at teardown and checked for orphan processes and files."""
    with ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(checked_emulator(**kwargs))


@pytest.fixture(scope="session")
def bwrap_required() -> None:
    problem = BubblewrapTier.problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here, so the sandbox cannot be tested: {problem}")
