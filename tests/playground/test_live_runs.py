"""A run's transcript against the real emulator, without a browser: the running code's output shows as it comes
(in both modes) and the result replaces it; a sandbox that cannot stream says so; a full sandbox service ends the
run with one sentence that says what to do, in both modes, without the model trying again."""

from __future__ import annotations

import time

import pytest

from azure_sessions.emulator.faults import parse_rules
from playground.backend import Backend
from playground.chat import run_message
from playground.files import SERVICE_FULL
from playground.model_catalog import NO_MODEL, ModelCatalog
from playground.sessions import BrowserSessions
from playground.settings import Settings
from playground.steps import NO_LIVE_OUTPUT
from tests.support.harness import wait_until
from tests.support.scripted_model import ScriptedModel, code_reply

SLOW_PRINT = "import time\nprint('first', 'line')\ntime.sleep(1.5)\nprint('second', 'line')"
"""Prints "first line", then "second line" 1.5 s later (the code itself says neither)."""


@pytest.fixture
def registry(emulator, emulator_token):
    settings = Settings(idle_timeout=60.0)
    reg = BrowserSessions(
        Backend.for_emulator(emulator, emulator_token), ModelCatalog.from_settings(settings), settings
    )
    yield reg
    reg.close_all()


@pytest.fixture
def full_service(emulator):
    """The emulator answers every execution as a full pool does, until the test ends."""

    def fill() -> None:
        emulator.faults.set_rules(parse_rules("full:path=executions"))

    yield fill
    emulator.faults.clear()


def with_model(session, *replies: str) -> ScriptedModel:
    model = ScriptedModel(list(replies))
    session.catalog = ModelCatalog.from_settings(Settings(), {"Scripted": lambda: model})
    return model


def shown(run) -> str:
    return "\n".join(str(m.content) for m in run.snapshot(time.monotonic()))


def pending(run) -> list:
    return [m for m in run.snapshot(time.monotonic()) if m.metadata.get("status") == "pending"]


def finished(run) -> list:
    assert run.settled.wait(60), "the run did not settle"
    run.thread.join(10)
    return run.snapshot(time.monotonic())


@pytest.mark.parametrize("mode", ["python", "agent"])
def test_the_running_codes_output_shows_before_it_ends_and_the_result_replaces_it(registry, mode) -> None:
    session = registry.session(f"live-{mode}", None)
    if mode == "agent":
        with_model(session, code_reply(SLOW_PRINT), code_reply("final_answer('done')"))
    run = run_message(session, SLOW_PRINT, [], NO_MODEL if mode == "python" else "extra:Scripted")
    block = wait_until(lambda: next((m for m in pending(run) if "first line" in str(m.content)), None), timeout=30)
    assert "second line" not in str(block.content) and not run.settled.is_set()  # shown while it runs
    assert "```python" in str(block.content)  # in the block with its code
    messages = finished(run)
    assert all(m.metadata.get("status") != "pending" for m in messages)
    text = "\n".join(str(m.content) for m in messages)
    assert text.count("first line") == 1 and "second line" in text  # the result, not the preview beside it


def test_a_sandbox_that_cannot_stream_says_when_the_output_comes(registry, emulator, monkeypatch) -> None:
    monkeypatch.setattr(emulator, "live_output", False)  # answers like the service: no such operation
    session = registry.session("no-stream", None)
    remove = session.executor.add_output_listener(lambda stream, text: None)
    session.executor.run_code_raise_errors("print('learns that the sandbox cannot stream')")
    remove()
    assert session.executor.supports_live_output is False
    run = run_message(session, SLOW_PRINT, [], NO_MODEL)
    wait_until(lambda: any(NO_LIVE_OUTPUT in str(m.content) for m in pending(run)), timeout=30)
    assert "first line" not in shown(run)
    assert "second line" in str(finished(run)[-1].content)


def test_a_full_sandbox_service_is_one_sentence_in_python_mode(registry, full_service) -> None:
    session = registry.session("full-python", None)
    full_service()
    messages = finished(run_message(session, "print(1)", [], NO_MODEL))
    assert messages[-1].content == f"⚠️ {SERVICE_FULL}"
    assert all("maxConcurrentSessions" not in str(m.content) for m in messages)


def test_a_full_sandbox_service_ends_an_agent_run_with_one_sentence(registry, full_service) -> None:
    session = registry.session("full-agent", None)
    model = with_model(session, *[code_reply("print('again')")] * 6)
    full_service()  # the agent's own setup meets the full service
    messages = finished(run_message(session, "go", [], "extra:Scripted"))
    assert messages[-1].content == f"⚠️ {SERVICE_FULL}" and not model.calls


def test_a_step_that_meets_a_full_service_ends_the_run_instead_of_trying_again(registry, full_service) -> None:
    session = registry.session("full-step", None)
    model = ScriptedModel(responder=lambda messages: (full_service(), code_reply("print('again')"))[1])
    session.catalog = ModelCatalog.from_settings(Settings(), {"Scripted": lambda: model})
    messages = finished(run_message(session, "go", [], "extra:Scripted"))
    assert len(model.calls) == 1  # the model was not asked to try again
    titles = [m.metadata.get("title") for m in messages if m.metadata]
    assert titles == ["Step 1 · sandbox service full"]
    assert messages[-1].content == f"⚠️ {SERVICE_FULL}"
