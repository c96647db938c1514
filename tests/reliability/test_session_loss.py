"""Issue 6 item 3: a session expired in the middle of an agent run. The executor notices (new session guid), the
agent's next observation and the page say that variables and files were lost, and the run finishes on the new
session. The expiry goes through the emulator's token-protected admin route, as an operator or a fault would.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from azure_sessions import SESSION_LOST_NOTICE
from tests.support.scripted_model import ScriptedModel, code_reply

TOKEN = "loss-token"
STEPS = [
    code_reply("data = [1, 2, 3]\nopen('/mnt/data/keep.txt', 'w').write('kept')\nprint('stored', sum(data))"),
    code_reply("print(sum(data), open('/mnt/data/keep.txt').read())", "I reuse what I stored."),
    code_reply("data = [1, 2, 3]\nfinal_answer(f'rebuilt: {sum(data)}')", "The session was recycled; I rebuild."),
]


@pytest.fixture(scope="module")
def loss_emulator():
    from tests.reliability.conftest import checked_emulator

    with checked_emulator(token=TOKEN, prestart=2) as emu:
        yield emu


def expire_via_admin_route(emu: Any, identifier: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    denied = requests.post(f"{emu.endpoint}/.emulator/expire", params={"identifier": identifier}, timeout=30)
    assert denied.status_code == 401  # the admin route is token-protected like every other route
    reply = requests.post(
        f"{emu.endpoint}/.emulator/expire", params={"identifier": identifier}, headers=headers, timeout=30
    )
    assert reply.status_code == 200 and reply.json() == {"expired": 1}


class ExpiringModel(ScriptedModel):
    """Replays STEPS and expires the session just before answering with the second step."""

    def __init__(self, emu: Any, identifier: Any) -> None:
        self.emu, self.identifier, self.step = emu, identifier, 0
        super().__init__(responder=self.reply)

    def reply(self, messages: list) -> str:
        self.step += 1
        if self.step == 2:
            expire_via_admin_route(self.emu, self.identifier())
        return STEPS[min(self.step, len(STEPS)) - 1]


def test_agent_sees_the_loss_and_finishes_on_the_new_session(loss_emulator) -> None:
    from smolagents import CodeAgent

    from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient

    emu = loss_emulator
    executor = AzureDynamicSessionsExecutor(client=SessionsClient(emu.endpoint, None, TOKEN))
    model = ExpiringModel(emu, lambda: executor.session_id)
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=5, verbosity_level=0)
    try:
        answer = agent.run("store data, then reuse it")
        guids = [e["sessionGuid"] for e in emu.execution_log() if e["identifier"] == executor.session_id]
    finally:
        executor.cleanup()
    assert answer == "rebuilt: 6"
    assert executor.session_resets == 1
    lost_step = agent.memory.steps[2]
    assert SESSION_LOST_NOTICE in str(lost_step.error)  # the observation of the step that hit the new session
    assert SESSION_LOST_NOTICE in str(model.calls[2][-1].content)  # ... is the last thing the model read next
    assert len(set(guids)) == 2 and guids[-1] != guids[0]  # the run continued on a new sandbox


def test_the_page_says_variables_and_files_were_lost(loss_emulator) -> None:
    from playground.backend import Backend
    from playground.chat import run_message
    from playground.model_catalog import ModelCatalog
    from playground.sessions import BrowserSessions
    from playground.settings import Settings

    emu = loss_emulator
    holder: dict[str, Any] = {}
    model = ExpiringModel(emu, lambda: holder["session"].session_id)
    settings = Settings()
    registry = BrowserSessions(
        Backend.for_emulator(emu, TOKEN), ModelCatalog.from_settings(settings, {"Expiring": lambda: model}), settings
    )
    try:
        session = holder["session"] = registry.session("tab-loss", None)
        run = run_message(session, "store data, then reuse it", [], "extra:Expiring")
        assert run.settled.wait(120)
        messages = run.snapshot(time.monotonic())
    finally:
        registry.close_all()
    texts = [m.content for m in messages if isinstance(m.content, str)]
    notices = [t for t in texts if t.startswith("⚠️") and SESSION_LOST_NOTICE in t]
    assert len(notices) == 1
    assert "variables, imports and files in /mnt/data" in notices[0]
    assert texts[-1] == "**Final answer**\n\nrebuilt: 6"
    # the notice follows the step that ran on the new session, and precedes the final answer
    assert texts.index(notices[0]) < texts.index(texts[-1])
