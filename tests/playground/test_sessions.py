"""Per-tab sessions against the real emulator, without a browser: lifecycle, cleanup, idle expiry, runs."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import pytest

from playground.backend import Backend
from playground.chat import run_message
from playground.models import NO_MODEL, ModelCatalog
from playground.sessions import SessionRegistry
from playground.settings import Settings
from tests.support.scripted_model import ScriptedModel, code_reply


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def registry(emulator, emulator_token):
    model = ScriptedModel(
        [code_reply("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"), code_reply("final_answer(7)")]
    )
    settings = Settings(idle_timeout=60.0, max_upload_bytes=1000)
    catalog = ModelCatalog.from_settings(settings, {"Scripted": lambda: model})
    reg = SessionRegistry(Backend.for_emulator(emulator, emulator_token), catalog, settings)
    yield reg
    reg.close_all()


def sandbox_ids(emulator) -> set[str]:
    return {s.identifier for s in emulator.backend.list_sessions()}


def last(updates):
    return deque(updates, maxlen=1)[0]


def test_sessions_are_per_tab_with_server_made_identifiers(registry):
    a, b = registry.get("tab-a"), registry.get("tab-b")
    assert a is registry.get("tab-a") and a is not b
    assert a.session_id != b.session_id and "tab-a" not in a.session_id
    assert a.executor.client is not b.executor.client
    with pytest.raises(ValueError):
        registry.get("")


def test_reset_and_close_delete_the_sandbox_and_temp_dir(registry, emulator):
    session = registry.get("tab")
    session.executor.run_code_raise_errors("x = 1")
    assert session.session_id in sandbox_ids(emulator)
    fresh = registry.reset("tab")
    assert fresh is not session and fresh.session_id != session.session_id
    wait_for(lambda: session.closed and not session.tmpdir.exists())
    assert session.session_id not in sandbox_ids(emulator)


def test_idle_sessions_are_reaped_and_the_tab_is_told(registry):
    session = registry.get("sleepy")
    assert registry.reap_idle(now=time.monotonic() + 30) == 0
    assert registry.reap_idle(now=time.monotonic() + 61) == 1
    wait_for(lambda: session.closed)
    assert registry.pop_expired_notice("sleepy") and not registry.pop_expired_notice("sleepy")
    assert registry.get("sleepy") is not session


def test_a_run_streams_steps_with_the_plot_and_the_answer(registry):
    session = registry.get("run")
    updates = run_message(session, "draw", [], "extra:Scripted")
    first = next(updates)  # at once, before any slow call: the first step, pending
    assert first.messages[0].metadata == {"title": "Step 1 · thinking…", "status": "pending"}
    final = last(updates)
    assert final.finished
    contents = [m.content for m in final.messages]
    assert any(isinstance(c, list) and c[0]["mime_type"] == "image/png" for c in contents)
    assert contents[-1] == "**Final answer**\n\n7"
    assert session.totals.steps == 2 and session.totals.output_tokens > 0


def test_no_model_mode_uploads_then_runs_python_and_refuses_big_files(registry, tmp_path: Path):
    session = registry.get("python")
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_text("hello")
    big.write_bytes(b"0" * 2000)
    final = last(run_message(session, "print(open('/mnt/data/small.txt').read())", [str(small), str(big)], NO_MODEL))
    texts = [m.content for m in final.messages if isinstance(m.content, str)]
    assert any("Uploaded `small.txt`" in t and "big.bin" in t and "too large" in t for t in texts)
    step = next(m for m in final.messages if m.metadata.get("title") == "Python")
    assert "hello" in step.content
    assert [f.name for f in final.files] == ["small.txt"]


def test_stop_ends_the_generator_at_once_and_the_agent_at_its_step_boundary(registry):
    session = registry.get("stop")
    session.catalog = ModelCatalog.from_settings(
        Settings(), {"Slow": lambda: ScriptedModel([code_reply("import time\ntime.sleep(1.5)")] * 5)}
    )
    updates = run_message(session, "go", [], "extra:Slow")
    next(updates)
    wait_for(lambda: session.agent is not None and session.agent.step_number >= 1)
    session.interrupt("user")
    started = time.monotonic()
    rest = list(updates)  # returns without waiting for the agent: one last update saying it stopped
    assert time.monotonic() - started < 1.0
    assert len(rest) == 1 and rest[0].finished
    assert "Stopped." in rest[0].messages[-1].content
    assert all(m.metadata.get("status") != "pending" for m in rest[0].messages)  # no spinner left
    wait_for(lambda: not session.run.alive(), timeout=10)
    assert session.agent.step_number <= 2


def test_a_closed_tab_run_draws_nothing_more(registry):
    session = registry.get("closed")
    updates = run_message(session, "draw", [], "extra:Scripted")
    next(updates)
    session.interrupt()  # unload / New session
    assert list(updates) == []
    wait_for(lambda: not session.run.alive(), timeout=10)
