"""Shared fixtures: one local dynamic-sessions emulator per test run, reached over real HTTP on loopback."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "localhost,127.0.0.1")

from collections.abc import Iterator

import pytest

from tests.support.harness import chromium_launch_options

TEST_TOKEN = "test-token-not-a-secret"


@pytest.fixture(scope="session")
def emulator() -> Iterator:
    from azure_sessions.emulator import start_emulator

    handle = start_emulator(token=TEST_TOKEN, prestart=2)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def emulator_endpoint(emulator) -> str:
    return emulator.endpoint


@pytest.fixture(scope="session")
def emulator_token(emulator) -> str:
    return TEST_TOKEN


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """The browser of pytest-playwright's fixtures (the browser tests of every suite)."""
    return {**browser_type_launch_args, **chromium_launch_options()}
