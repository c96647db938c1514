"""Workers forked from the prepared template, in every tier: each is a session of its own that shares nothing it
should not with the template or with other sessions, and sessions keep coming when the template itself dies (under
bubblewrap the running ones end with it: they live in its sandbox; they are told so, like any lost session)."""

from __future__ import annotations

import ast
import os
import signal
from types import SimpleNamespace

import pytest

from tests.emulator.conftest import new_id
from tests.support.harness import wait_until

FIXTURES = {"bubblewrap": ("bubblewrap_emulator", "api"), "landlock": ("landlock_emulator", "landlock_api"),
            "unisolated": ("unisolated", "unisolated_api")}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def tier(request) -> SimpleNamespace:
    emulator_fixture, api_fixture = FIXTURES[request.param]
    emulator = request.getfixturevalue(emulator_fixture)
    return SimpleNamespace(name=request.param, emu=emulator, api=request.getfixturevalue(api_fixture))


def worker_pid(tier: SimpleNamespace, identifier: str) -> int:
    return tier.emu.session(identifier).worker_pid


def open_files(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


def test_a_forked_worker_holds_none_of_the_templates_descriptors(tier) -> None:
    identifier = new_id()
    assert tier.api.run(identifier, "print('ready')")["stdout"] == "ready\n"
    template = tier.emu.template_pid
    assert template is not None and worker_pid(tier, identifier) != template
    targets = open_files(worker_pid(tier, identifier))
    assert not [t for t in targets if t.startswith("socket:")], targets  # not the template's control socket
    assert not [t for t in targets if "template" in t], targets  # nor its log or its directories
    assert [t for t in targets if t.startswith("/")] == ["/dev/null"], targets  # no file: its own log is a pipe


def test_every_session_gets_fresh_random_state(tier) -> None:
    code = "import random, numpy as np\n(random.random(), float(np.random.rand()), random.getrandbits(64))"
    draws = [ast.literal_eval(tier.api.run(new_id(), code)["executionResult"]) for _ in range(3)]
    for position in range(3):
        assert len({draw[position] for draw in draws}) == 3, draws


def test_sessions_survive_the_template_and_new_ones_get_a_new_one(tier) -> None:
    emu = tier.emu
    old = new_id()
    guid = tier.api.run(old, "kept = 'still here'")["guid"]
    template = emu.template_pid
    os.kill(template, signal.SIGKILL)
    wait_until(lambda: emu.template_pid != template, timeout=20, what="the template's death is noticed")
    for _ in range(emu.prestart + 1):  # beyond the warm pool: a fork from a new template
        fresh = tier.api.run(new_id(), "print('new session')")
        assert fresh["status"] == "Succeeded" and fresh["stdout"] == "new session\n", fresh
    wait_until(lambda: emu.template_pid not in (None, template), timeout=30, what="a new template")
    if tier.name != "bubblewrap":
        assert tier.api.run(old, "kept")["executionResult"] == "still here"  # it outlived its parent
        return
    after = tier.api.run(old, "'kept' in dir()")  # it died with the template's sandbox: a fresh session, new guid
    assert after["executionResult"] is False and after["guid"] != guid, after
