"""Per-browser sessions against the real emulator, without a browser: keys, lifecycle, cleanup, idle expiry, runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from playground.backend import Backend
from playground.chat import run_message
from playground.model_catalog import NO_MODEL, ModelCatalog
from playground.runs import CANNOT_INTERRUPT, INTERRUPTED
from playground.sessions import IDLE_NOTICE, BrowserSessions
from playground.settings import Settings
from tests.support.harness import wait_until
from tests.support.scripted_model import ScriptedModel, code_reply


@pytest.fixture
def registry(emulator, emulator_token):
    model = ScriptedModel(
        [code_reply("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"), code_reply("final_answer(7)")]
    )
    settings = Settings(idle_timeout=60.0, max_upload_bytes=1000)
    catalog = ModelCatalog.from_settings(settings, {"Scripted": lambda: model})
    reg = BrowserSessions(Backend.for_emulator(emulator, emulator_token), catalog, settings)
    yield reg
    reg.close_all()


def sandbox_ids(emulator) -> set[str]:
    return set(emulator.session_identifiers())


def finished(run):
    assert run.settled.wait(60), "the run did not settle"
    run.thread.join(10)
    return run.snapshot(time.monotonic())


def test_a_browser_key_finds_its_session_and_the_server_keeps_only_its_digest(registry):
    first = registry.attach("tab-1", None)
    assert first.key and len(first.key) >= 43
    again = registry.attach("tab-2", first.key)  # a reload, or a second tab of the same browser
    assert again.session is first.session and again.key is None
    other = registry.attach("tab-3", None)
    assert other.session is not first.session and other.key != first.key
    assert first.session.session_id != other.session.session_id and first.key not in first.session.session_id
    stored = repr(vars(registry)) + repr(vars(first.session))
    assert first.key not in stored  # only its SHA-256
    forged = registry.attach("tab-4", "A" * 43)  # well-formed, but never issued here
    assert forged.session is not first.session and forged.key != "A" * 43
    with pytest.raises(ValueError):
        registry.attach("", None)


def test_an_event_before_the_page_load_gets_the_session_the_load_then_keeps(registry):
    early = registry.session("tab", None)
    attached = registry.attach("tab", None)
    assert attached.session is early and attached.key


def test_new_session_and_close_delete_the_sandbox_and_temp_dir(registry, emulator):
    key = registry.attach("tab", None).key
    session = registry.session("tab", key)
    session.executor.run_code_raise_errors("x = 1")
    assert session.session_id in sandbox_ids(emulator)
    fresh = registry.reset("tab", key)
    assert fresh is not session and fresh.session_id != session.session_id
    assert registry.attach("tab-2", key).session is fresh  # the same key now finds the fresh session
    wait_until(lambda: session.cleaned.is_set() and not session.store.scratch.exists())
    assert session.session_id not in sandbox_ids(emulator)


def test_a_page_that_goes_away_leaves_the_session_until_it_is_idle(registry):
    key = registry.attach("tab", None).key
    session = registry.session("tab", key)
    registry.detach("tab")
    assert registry.attach("tab-after-reload", key).session is session
    assert registry.reap(now=time.monotonic() + 30) == 0
    assert registry.reap(now=time.monotonic() + 61) == 1
    wait_until(lambda: session.closed)
    back = registry.attach("tab-next-day", key)
    assert back.session is not session and back.key is None
    assert [m.content for m in back.session.view()] == [IDLE_NOTICE]  # the page says why it is empty
    registry.reap(now=time.monotonic() + 61)  # idle again, with the page still open
    wait_until(lambda: back.session.closed)
    fresh = registry.session("tab-next-day", key)  # the open page's next event
    assert fresh is not back.session and [m.content for m in fresh.view()] == [IDLE_NOTICE]


def test_a_run_streams_steps_with_the_plot_and_the_answer(registry):
    session = registry.session("run", None)
    run = run_message(session, "draw", [], "extra:Scripted")
    first = run.snapshot(time.monotonic())  # at once, before any slow call
    assert first[0].content == "draw"
    messages = finished(run)
    contents = [m.content for m in messages]
    assert any(isinstance(c, list) and c[0]["mime_type"] == "image/png" for c in contents)
    assert contents[-1] == "**Final answer**\n\n7"
    assert session.totals.steps == 2 and session.totals.output_tokens > 0
    assert session.view()[-1].content == contents[-1]


def test_no_model_mode_uploads_then_runs_python_and_refuses_big_files(registry, tmp_path: Path):
    session = registry.session("python", None)
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_text("hello")
    big.write_bytes(b"0" * 2000)
    messages = finished(
        run_message(session, "print(open('/mnt/data/small.txt').read())", [str(small), str(big)], NO_MODEL)
    )
    texts = [m.content for m in messages if isinstance(m.content, str)]
    assert any("small.txt** · 5 B" in t and "big.bin** · 2.0 KB" in t for t in texts)  # names and sizes
    assert any("Uploaded `small.txt`" in t and "big.bin" in t and "too large" in t for t in texts)
    assert "hello" in texts[-1] and not messages[-1].metadata  # the answer is a plain message
    assert [f.name for f in session.store.files] == ["small.txt"]


@pytest.fixture
def sleeping(emulator, emulator_token):
    """Whether a session's sandbox has received the `time.sleep(60)` cell (the emulator's admin route)."""

    def check(session) -> bool:
        reply = requests.get(
            f"{emulator.endpoint}/.emulator/executions",
            params={"identifier": session.session_id},
            headers={"Authorization": f"Bearer {emulator_token}"},
            timeout=10,
        )
        reply.raise_for_status()
        return any("time.sleep(60)" in execution["code"] for execution in reply.json()["executions"])

    return check


def test_stop_interrupts_the_running_code_and_the_agent_ends(registry, sleeping):
    session = registry.session("stop", None)
    session.catalog = ModelCatalog.from_settings(
        Settings(), {"Slow": lambda: ScriptedModel([code_reply("kept = 1\nimport time\ntime.sleep(60)")] * 5)}
    )
    run = run_message(session, "go", [], "extra:Slow")
    wait_until(lambda: run.started and sleeping(session), interval=0.1)
    stopped = session.stop_run()
    assert stopped is run and session.stop_run() is None  # asked once
    messages = finished(run)
    assert run.interrupt == INTERRUPTED
    assert "The running code was interrupted" in messages[-1].content
    assert all(m.metadata.get("status") != "pending" for m in messages)  # no spinner left
    assert session.agent.step_number <= 2
    assert session.executor.run_code_raise_errors("kept").output == 1  # the session survived


def test_stop_without_interrupt_says_so_and_reset_sandbox_ends_the_code(registry, emulator, monkeypatch, sleeping):
    monkeypatch.setattr(emulator, "interruptible", False)
    session = registry.session("azure-like", None)
    session.catalog = ModelCatalog.from_settings(
        Settings(), {"Slow": lambda: ScriptedModel([code_reply("import time\ntime.sleep(60)")] * 5)}
    )
    run = run_message(session, "go", [], "extra:Slow")
    wait_until(lambda: run.started and sleeping(session), interval=0.1)
    session.stop_run()
    wait_until(lambda: run.interrupt == CANNOT_INTERRUPT)
    assert session.offers_reset() and run.has_timer()
    note = run.snapshot(time.monotonic())[-1]
    assert note.metadata["title"].startswith("Stopping · ") and "cannot interrupt" in note.content
    queued = run_message(session, "print('next')", [], NO_MODEL)
    waiting = queued.snapshot(time.monotonic())[-1]
    assert waiting.metadata["title"].startswith("Waiting · ") and "Reset sandbox" in waiting.content
    old_id = session.session_id
    session.reset_sandbox()
    assert session.session_id != old_id and run.settled.is_set() and not session.offers_reset()
    messages = finished(queued)
    assert "next" in messages[-1].content
    wait_until(lambda: old_id not in sandbox_ids(emulator))


def test_a_message_queued_behind_a_reset_run_runs_in_the_new_sandbox(registry, emulator, monkeypatch, sleeping):
    """Reset sandbox wakes the message waiting behind the run it ends: that message runs under the session's new
    identifier, never in the sandbox being deleted (nor leasing one under the old identifier). The agent's
    interrupt, the step of the reset after the runs are abandoned, waits here until the woken message has run."""
    queued_code = "print('queued behind the reset')"  # (the emulator, and its execution log, serve every test)
    session = registry.session("azure-like", None)
    session.catalog = ModelCatalog.from_settings(
        Settings(), {"Slow": lambda: ScriptedModel([code_reply("import time\ntime.sleep(60)")] * 5)}
    )
    run = run_message(session, "go", [], "extra:Slow")
    wait_until(lambda: run.started and sleeping(session), interval=0.1)
    queued = run_message(session, queued_code, [], NO_MODEL)

    def ran_next() -> list[str]:
        return [e["identifier"] for e in emulator.execution_log() if e["code"] == queued_code]

    interrupt = session.agent.interrupt

    def interrupt_once_the_next_message_ran() -> None:
        wait_until(ran_next, what="the woken message ran")
        interrupt()

    monkeypatch.setattr(session.agent, "interrupt", interrupt_once_the_next_message_ran)
    old_id = session.session_id
    session.reset_sandbox()
    assert ran_next() == [session.session_id] and session.session_id != old_id
    assert "queued behind the reset" in finished(queued)[-1].content
    wait_until(lambda: old_id not in sandbox_ids(emulator), what="the old sandbox is deleted")


def test_a_closed_session_freezes_its_run(registry):
    session = registry.session("closed", None)
    run = run_message(session, "draw", [], "extra:Scripted")
    session.close(wait=10)
    assert run.settled.is_set() and run.reason == "closed"
    wait_until(lambda: not run.thread.is_alive(), timeout=10)


def test_sign_in_can_be_required_before_any_code_runs(emulator, emulator_token):
    from playground.visitors import CapReached, Visitor

    settings = Settings(require_login=True)
    reg = BrowserSessions(
        Backend.for_emulator(emulator, emulator_token), ModelCatalog.from_settings(settings), settings
    )
    try:
        key = reg.attach("tab", None, Visitor("1.1.1.1")).key
        anonymous = reg.session("tab", key, Visitor("1.1.1.1"))
        with pytest.raises(CapReached, match="Sign in with Hugging Face"):
            anonymous.executor  # noqa: B018
        signed_in = reg.session("tab", key, Visitor("1.1.1.1", user="ana"))
        assert signed_in.executor.run_code_raise_errors("1 + 1").output == 2
    finally:
        reg.close_all()


def test_an_event_that_reuses_a_tab_without_its_key_is_refused(registry):
    from playground.sessions import NotYours

    key = registry.attach("victim-tab", None).key
    victim = registry.session("victim-tab", key)
    with pytest.raises(NotYours):
        registry.session("victim-tab", None)  # the session hash alone
    with pytest.raises(NotYours):
        registry.session("victim-tab", registry.attach("other-tab", None).key)  # someone else's key
    with pytest.raises(NotYours):
        registry.attach("victim-tab", None)  # a page load cannot take the tab over either
    assert registry.peek("victim-tab", None) is None
    assert registry.session("victim-tab", key) is victim
