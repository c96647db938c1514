"""Issue 6 item 7: with debug logging everywhere, a full run's logs, printed output, the page (served HTML and
config, and the DOM of a browser run), every exception message and every repr hold none of the injected secrets:
the bearer token, the API keys, the client secret, issued JWTs.
"""

from __future__ import annotations

import io
import logging
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient, SessionsError
from azure_sessions.emulator.faults import parse_rule
from tests.reliability.support import new_identifier, running_playground
from tests.reliability.test_credentials import ShortLivedCredential
from tests.support.scripted_model import ScriptedModel, code_reply

SECRETS = {
    "OPENAI_API_KEY": f"sk-fake-openai-{uuid.uuid4().hex}",
    "HF_TOKEN": f"hf_fake{uuid.uuid4().hex}",
    "AZURE_CLIENT_SECRET": f"fake-client-secret-{uuid.uuid4().hex}",
    "AZURE_OPENAI_API_KEY": f"fake-aoai-key-{uuid.uuid4().hex}",
}
BEARER = f"bearer-{uuid.uuid4().hex}"
WRONG_BEARER = f"wrong-bearer-{uuid.uuid4().hex}"
DEBUG_LOGGERS = ["", "azure_sessions", "azure", "urllib3", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx",
                 "gradio", "smolagents", "playground", "asyncio"]  # fmt: skip


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken log call must not hide what it tried to log
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(text)


@pytest.fixture
def debug_logs(monkeypatch) -> Iterator[Collector]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-00000000beef")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000cafe")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "fake-deployment")
    collector = Collector()
    saved = []
    for name in DEBUG_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(collector)
    try:
        yield collector
    finally:
        for logger, level in saved:
            logger.removeHandler(collector)
            logger.setLevel(level)


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Which secrets occur in ``text``, whole or in part (12 characters of their random part)."""
    found = []
    for value in [*SECRETS.values(), BEARER, WRONG_BEARER]:
        if value in text or value[-32:-20] in text:
            found.append(value)
    return found + [token for token in extra if token in text or token.split(".")[1][:24] in text]


def describe(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


def exercise_library(emu: Any, errors: list[str]) -> None:
    """Every client operation with the static bearer token, and every kind of failure."""
    client = SessionsClient(emu.endpoint, new_identifier(), BEARER)
    client.execute("x = 1\nprint(x)")
    client.upload(io.BytesIO(b"data"), "d.txt")
    client.read_bytes("d.txt")
    client.list_files()
    client.file_info("d.txt")
    client.get_session()
    client.delete_file("d.txt")
    errors.append(repr(client))
    for failing in (
        lambda: SessionsClient(emu.endpoint, new_identifier(), WRONG_BEARER).list_files(),  # 401
        lambda: client.read_bytes("missing.txt"),  # 404
        lambda: client.read_bytes("../escape"),  # refused name
        lambda: SessionsClient("http://127.0.0.1:9/pool", new_identifier(), BEARER).list_files(),  # refused
        lambda: client.execute("1", timeout=0.001) and client.execute("import time; time.sleep(3)", timeout=1),
    ):
        try:
            failing()
        except SessionsError as exc:
            errors.append(describe(exc))
    emu.faults.set_rules([parse_rule("drop:count=1:path=executions")])
    try:
        client.execute("1")
    except SessionsError as exc:
        errors.append(describe(exc))
    emu.faults.clear()
    client.delete_session()
    client.close()


def exercise_jwt_credential(emu: Any, errors: list[str], seen_tokens: list[str]) -> None:
    credential = ShortLivedCredential()
    jwt_client = SessionsClient(emu.endpoint, new_identifier(), credential)
    jwt_client.execute("1")
    jwt_client.list_files()
    errors.append(repr(jwt_client) + repr(jwt_client._tokens))
    jwt_client.delete_session()
    jwt_client.close()
    seen_tokens.extend(credential_tokens(credential))


def credential_tokens(credential: ShortLivedCredential) -> list[str]:
    from tests.reliability.test_credentials import jwt

    return [jwt(expires, serial) for serial, (_, expires) in enumerate(credential.fetches, start=1)]


def exercise_client_secret(errors: list[str]) -> None:
    """A service-principal credential whose authority is a closed loopback port: the failure must not quote it."""
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        "00000000-0000-0000-0000-00000000beef",
        "00000000-0000-0000-0000-00000000cafe",
        SECRETS["AZURE_CLIENT_SECRET"],
        authority="https://127.0.0.1:9",
        disable_instance_discovery=True,  # nothing but loopback
        retry_total=0,
    )
    client = SessionsClient("http://127.0.0.1:9/pool", new_identifier(), credential)
    try:
        client.list_files()
    except SessionsError as exc:
        errors.append(describe(exc))
    errors.append(repr(client) + repr(client._tokens))
    client.close()


def test_no_secret_in_logs_output_errors_or_the_page(start_emulator_checked, debug_logs, capfd, tmp_path, browser):
    emu = start_emulator_checked(token=BEARER, prestart=1, log_level="debug")
    errors: list[str] = [repr(emu)]
    seen_tokens: list[str] = []
    exercise_library(emu, errors)
    exercise_jwt_credential(start_emulator_checked(token=None, prestart=0), errors, seen_tokens)
    exercise_client_secret(errors)

    # an agent run through the executor
    executor = AzureDynamicSessionsExecutor(pool_management_endpoint=emu.endpoint, credential=BEARER)
    from smolagents import CodeAgent

    agent = CodeAgent(
        tools=[],
        model=ScriptedModel([code_reply("print('working')\n1/0"), code_reply("final_answer('done')")]),
        executor=executor,
        max_steps=3,
    )
    assert agent.run("work") == "done"
    errors += [repr(executor), str(agent.memory.steps[1].error)]
    executor.cleanup()

    # the page: settings from the environment (so the OpenAI, Azure OpenAI and HF options exist), a scripted run
    model = ScriptedModel([code_reply("print('from the page')"), code_reply("final_answer('page done')")])
    with running_playground(emu, BEARER, {"Scripted": lambda: model}, tmp_path / "gradio") as (url, app):
        served = requests.get(url, timeout=30).text + requests.get(url + "config", timeout=30).text
        for path in ("gradio_api/info", "gradio_api/openapi.json"):
            reply = requests.get(url + path, timeout=30)
            served += reply.text if reply.ok else ""
        page = browser.new_page()
        page.goto(url)
        page.locator("#chat-input textarea").fill("run something")
        page.locator("#chat-input textarea").press("Enter")
        page.get_by_text("page done").first.wait_for(timeout=30_000)
        dom = page.content()
        (session,) = app.registry.sessions()
        # the sandbox identifier is a secret: the page shows its first 8 characters, never the whole of it
        assert session.short_id in dom and session.session_id not in dom + served
        page.context.close()
        errors += [repr(app.settings), repr(app.backend), repr(app.handlers.catalog)]

    out = capfd.readouterr()
    texts = {
        "logs": "\n".join(debug_logs.lines),
        "stdout/stderr": out.out + out.err,
        "errors and reprs": "\n".join(errors),
        "served page": served,
        "browser DOM": dom,
    }
    assert len(debug_logs.lines) > 50  # debug logging really was on
    assert "page done" in dom and "Injected fault" not in texts["errors and reprs"]
    for where, text in texts.items():
        found = leaks(text, tuple(seen_tokens))
        context = [text[max(0, text.find(v[-32:-20]) - 300) : text.find(v[-32:-20]) + 100] for v in found]
        assert found == [], f"a secret leaked into the {where}: {context}"
    assert len(seen_tokens) >= 1
