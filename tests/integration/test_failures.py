"""What the client and the executor say when code fails, when a pool is full, and when a file is not a regular file:
one structured error each, read by every layer without parsing text."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from smolagents import CodeAgent
from smolagents.monitoring import AgentLogger, LogLevel

from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient
from azure_sessions.emulator import start_emulator
from azure_sessions.errors import NotARegularFileError, PoolFullError
from azure_sessions.executor import CodeExecutionError, execution_error_of, sessions_error_of
from tests.support.harness import wait_until
from tests.support.scripted_model import ScriptedModel, code_reply


def test_an_exception_is_one_structured_error(client):
    result = client.execute("print('before')\nraise ValueError('first line\\nsecond line')")
    error = result.error
    assert error is not None and (error.name, error.value) == ("ValueError", "first line\nsecond line")
    assert error.label == "ValueError: first line" and not error.interrupted
    assert "Traceback (most recent call last)" in error.traceback.splitlines()[1]
    assert client.execute("1 + 1").error is None


def test_a_syntax_error_and_a_chained_exception(client):
    syntax = client.execute("def (").error
    assert syntax is not None and syntax.name == "SyntaxError"
    chained = client.execute("try:\n    1/0\nexcept Exception as e:\n    raise KeyError('k') from e").error
    assert chained is not None and (chained.name, chained.value) == ("KeyError", "'k'")
    assert "ZeroDivisionError" in chained.traceback  # the whole chain is kept


def test_an_interrupt_and_a_timeout_are_interrupted(make_client):
    client = make_client("2024-10-02-preview")
    results: list = []
    runner = threading.Thread(target=lambda: results.append(client.execute("import time; time.sleep(30)")))
    runner.start()
    wait_until(client.interrupt, what="the cell was interrupted")
    runner.join(timeout=10)
    stopped = results[0].error
    assert stopped is not None and stopped.interrupted and stopped.name == "KeyboardInterrupt"
    timed_out = client.execute("import time; time.sleep(30)", timeout=1).error
    assert timed_out is not None and timed_out.interrupted and timed_out.name == "TimeoutError"
    assert "timeout of 1 seconds" in timed_out.value


def test_the_executor_raises_the_error_it_parsed(make_executor):
    executor = make_executor("2025-10-02-preview")
    reports = []
    executor.add_listener(reports.append)
    with pytest.raises(CodeExecutionError) as caught:
        executor("1/0")
    assert (caught.value.error.name, caught.value.interrupted) == ("ZeroDivisionError", False)
    assert "ZeroDivisionError: division by zero" in str(caught.value)  # what the model reads
    assert execution_error_of(caught.value) is caught.value.error
    assert reports[-1].failed and reports[-1].error is caught.value.error
    executor("x = 1")
    assert reports[-1].error is None and not reports[-1].failed


def test_a_step_error_leads_back_to_the_execution_error(make_executor):
    """smolagents turns what an executor raises into an AgentExecutionError made of its text; the structured error
    is found behind it."""
    executor = make_executor("2024-10-02-preview")
    model = ScriptedModel([code_reply("raise KeyboardInterrupt"), code_reply("final_answer('done')")])
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=3, verbosity_level=0)
    assert agent.run("go") == "done"
    error = execution_error_of(agent.memory.steps[1].error)
    assert error is not None and error.interrupted and error.name == "KeyboardInterrupt"


@pytest.fixture(scope="module", params=[404, 429])
def full_emulator(request):
    with (
        start_emulator(token="t", max_sessions=1, prestart=0, pool_full_status=request.param) as emu,
        SessionsClient(emu.endpoint, "holder-1", credential="t") as holder,
    ):
        holder.execute("1")
        yield request.param, emu


class Faults:
    """The shared emulator's fault rules, through its admin routes."""

    def __init__(self, endpoint: str, token: str) -> None:
        self.url, self.headers = f"{endpoint}/.emulator/faults", {"Authorization": f"Bearer {token}"}

    def set(self, *rules: str) -> None:
        requests.put(self.url, json={"rules": list(rules)}, headers=self.headers, timeout=10).raise_for_status()

    def fired(self) -> dict[str, int]:
        return requests.get(self.url, headers=self.headers, timeout=10).json()["fired"]

    def clear(self) -> None:
        requests.delete(self.url, headers=self.headers, timeout=10)


@pytest.fixture
def faults(emulator_endpoint, emulator_token) -> Iterator[Faults]:
    injected = Faults(emulator_endpoint, emulator_token)
    yield injected
    injected.clear()


def test_a_full_pool_is_one_error_for_404_and_429(full_emulator):
    status, emu = full_emulator
    with SessionsClient(emu.endpoint, "newcomer-1", credential="t") as client:
        with pytest.raises(PoolFullError) as caught:
            client.execute("1")
        with pytest.raises(PoolFullError):
            client.list_files()
    assert caught.value.status_code == status and caught.value.error_code == "MaxConcurrentSessionsReached"
    message = str(caught.value)
    assert "maximum number of concurrent sessions" in message and "Delete sessions you no longer need" in message


@pytest.mark.parametrize("rule", ["full:path=executions", "full:status=429:path=executions", "429:path=executions"])
def test_a_full_pool_is_never_retried(faults, emulator_endpoint, emulator_token, rule):
    """Neither the labelled reply (404 or 429) nor a bare 429 without Retry-After is sent again: a slot frees in
    minutes. (A 429 with Retry-After is retried as it asks: tests/unit/test_retry.py.)"""
    before = sum(faults.fired().values())
    faults.set(rule)
    with SessionsClient(emulator_endpoint, credential=emulator_token) as client, pytest.raises(PoolFullError):
        client.execute("1")
    assert sum(faults.fired().values()) == before + 1, faults.fired()


def test_the_executor_and_the_agent_surface_a_full_pool(faults, emulator_endpoint, emulator_token):
    executor = AzureDynamicSessionsExecutor(
        logger=AgentLogger(level=LogLevel.OFF), pool_management_endpoint=emulator_endpoint, credential=emulator_token
    )
    replies = iter([code_reply("print(1)"), code_reply("final_answer(1)")])

    def model_fills_the_pool(messages) -> str:  # after the agent's setup ran, before its first step's code
        faults.set("full:path=executions")
        return next(replies)

    try:
        agent = CodeAgent(
            tools=[], model=ScriptedModel(responder=model_fills_the_pool), executor=executor, max_steps=1
        )
        agent.run("go")
        assert isinstance(sessions_error_of(agent.memory.steps[1].error), PoolFullError)
        assert execution_error_of(agent.memory.steps[1].error) is None
        with pytest.raises(PoolFullError):
            executor("1")
    finally:
        faults.clear()
        executor.cleanup()


def test_a_link_or_a_fifo_is_refused_with_the_reason(client):
    made = client.execute("import os\nos.symlink('/etc/passwd', '/mnt/data/pw')\nos.mkfifo('pipe')")
    assert made.error is None, made.stderr
    with pytest.raises(NotARegularFileError) as link:
        client.read_bytes("pw")
    assert link.value.status_code == 409 and link.value.error_code == "LinkNotFollowed"
    assert "'pw' is a link: links are not followed" in link.value.message
    with pytest.raises(NotARegularFileError) as fifo:
        client.read_bytes("pipe")
    assert "'pipe' is not a regular file: it is a FIFO" in fifo.value.message
    assert "api-version" not in str(fifo.value)  # the reason, not a guess at the request's fault
