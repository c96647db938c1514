"""A real CodeAgent through the executor, over HTTP, against a minimal exec()-based kernel double.

The double runs the posted code with real Python (so the remote final_answer patch is exercised end to end) and
answers in either dialect. The full behaviour is covered against the emulator in tests/integration.
"""

from __future__ import annotations

import ast
import io
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest
from smolagents import CodeAgent
from smolagents.monitoring import AgentLogger, LogLevel

from azure_sessions import AzureDynamicSessionsExecutor
from tests.support.scripted_model import ScriptedModel, code_reply
from tests.unit import recordings as rec
from tests.unit.wire_server import Received, Reply


class MiniKernel:
    """Executes each request's code in one persistent namespace; optionally truncates stdout like the service."""

    def __init__(self, max_stdout: int | None = None) -> None:
        self.namespace: dict = {"__name__": "__main__"}
        self.max_stdout = max_stdout
        self.guid = "guid-1"

    def __call__(self, request: Received) -> Reply:
        envelope = request.path == "code/execute"
        body = request.json["properties"] if envelope else request.json
        out, err, value, ok = io.StringIO(), io.StringIO(), "", True
        with redirect_stdout(out), redirect_stderr(err):
            try:
                tree = ast.parse(body["code"])
                last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
                exec(compile(tree, "<cell>", "exec"), self.namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.namespace)
            except BaseException:
                traceback.print_exc()
                ok = False
        if value is None or not isinstance(value, (str, int, float, bool)):
            value = "" if value is None else repr(value)
        stdout = out.getvalue()[: self.max_stdout]
        if envelope:
            payload = rec.envelope_execution(stdout, err.getvalue(), value, "Success" if ok else "Failure")
        else:
            payload = rec.resource_execution(stdout, err.getvalue(), value, "Succeeded" if ok else "Failed")
        return Reply(200 if envelope else 202, payload, headers={"x-ms-session-guid": self.guid})


@pytest.fixture(params=["2024-02-02-preview", "2024-10-02-preview"])
def dialect_version(request) -> str:
    return request.param


def make_executor(make_client, version: str) -> AzureDynamicSessionsExecutor:
    return AzureDynamicSessionsExecutor(client=make_client(version), logger=AgentLogger(level=LogLevel.OFF))


def test_code_agent_two_step_task(server, make_client, dialect_version):
    server.fallback = MiniKernel()
    executor = make_executor(make_client, dialect_version)
    model = ScriptedModel(
        [
            code_reply("numbers = [n * n for n in range(1, 8)]\nprint(sum(numbers))"),
            code_reply("final_answer({'total': sum(numbers), 'items': tuple(numbers[:2])})"),
        ]
    )
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=4, verbosity_level=0)
    assert agent.run("Sum the squares of 1..7") == {"total": 140, "items": (1, 4)}
    assert "140" in str(agent.memory.steps[1].observations)
    # one setup execution (tools), two steps; no follow-up was needed
    assert len(server.requests) == 3
    # a second run on the same agent reuses the tools already defined in the session
    model._replies.append(code_reply("final_answer(sum(numbers) + 1)"))
    assert agent.run("And plus one?", reset=False) == 141
    assert len(server.requests) == 4


def test_truncated_output_final_answer_is_recovered(server, make_client, dialect_version):
    server.fallback = MiniKernel(max_stdout=4096)
    executor = make_executor(make_client, dialect_version)
    from smolagents.default_tools import FinalAnswerTool

    executor.send_tools({"final_answer": FinalAnswerTool()})
    out = executor("print('x' * 5000)\nfinal_answer('y' * 2000)")
    assert out.is_final_answer and out.output == "y" * 2000
    assert len(server.requests) == 3  # tools, code, one follow-up


def test_final_answer_of_unserializable_value_is_agent_error(server, make_client):
    from smolagents.default_tools import FinalAnswerTool
    from smolagents.utils import AgentError

    server.fallback = MiniKernel()
    executor = make_executor(make_client, "2024-10-02-preview")
    executor.send_tools({"final_answer": FinalAnswerTool()})
    with pytest.raises(AgentError, match="serialize"):
        executor("final_answer(object())")
