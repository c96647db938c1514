"""AzureDynamicSessionsExecutor against scripted replies: final answers, errors, outputs, session loss."""

from __future__ import annotations

import json

import PIL.Image
import pytest
from smolagents.default_tools import FinalAnswerTool
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentError

from azure_sessions import SESSION_LOST_NOTICE, AzureDynamicSessionsExecutor
from azure_sessions.executor import POOL_ENDPOINT_ENV
from tests.unit import recordings as rec
from tests.unit.wire_server import Reply

FA_TRACEBACK = "Traceback (most recent call last):\n  ...\nFinalAnswerException: safe:42\n"


@pytest.fixture
def executor(make_client):
    ex = AzureDynamicSessionsExecutor(client=make_client(), logger=AgentLogger(level=LogLevel.OFF))
    yield ex
    ex.client.close()


def ok(stdout: str = "", value: object = "", stderr: str = "", guid: str = "guid-1") -> Reply:
    return Reply(
        202, rec.resource_execution(stdout=stdout, value=value, stderr=stderr), headers={"x-ms-session-guid": guid}
    )


def failed(stdout: str = "", stderr: str = FA_TRACEBACK, guid: str = "guid-1") -> Reply:
    body = rec.resource_execution(stdout=stdout, stderr=stderr, status="Failed")
    return Reply(202, body, headers={"x-ms-session-guid": guid})


def frame(ex: AzureDynamicSessionsExecutor, encoded: str) -> str:
    return f"\n{ex._answer.start}{encoded}{ex._answer.end}\n"


def test_final_answer_plain(server, executor):
    server.queue(failed(stdout=frame(executor, "safe:42")))
    out = executor("final_answer(42)")
    assert (out.output, out.is_final_answer, out.logs) == (42, True, "")
    assert len(server.requests) == 1


def test_final_answer_with_other_output_and_later_traceback(server, executor):
    later = 'Traceback (most recent call last):\n  File "<cell>", line 4\nZeroDivisionError: division by zero\n'
    server.queue(failed(stdout="step 1\n" + frame(executor, 'safe:{"a": [1, 2]}') + "after\n", stderr=later))
    out = executor("print('step 1')\ntry:\n    final_answer({'a': [1, 2]})\nfinally:\n    print('after'); 1/0")
    assert out.is_final_answer and out.output == {"a": [1, 2]}
    assert out.logs == "step 1\nafter\n"


def test_final_answer_truncated_frame_triggers_one_follow_up(server, executor):
    long_answer = "x" * 5000
    encoded = "safe:" + json.dumps(long_answer)
    server.queue(failed(stdout="hi\n" + frame(executor, encoded)[:300]))
    server.queue(ok(value=encoded))
    out = executor("final_answer('x' * 5000)")
    assert out.is_final_answer and out.output == long_answer and out.logs == "hi\n"
    follow_up = server.requests[1].json["code"]
    assert executor._answer.global_name in follow_up and "pop" in follow_up
    assert len(server.requests) == 2


def test_long_truncated_final_answer_comes_back_through_a_file(server, executor):
    encoded = "safe:" + json.dumps("z" * 100_000)
    server.queue(failed(stdout=frame(executor, encoded)[:4096]))
    server.queue(ok(value=f"file:{len(encoded)}"))
    server.queue(Reply(200, body=encoded.encode()), Reply(204))
    out = executor("final_answer('z' * 100_000)")
    assert out.is_final_answer and out.output == "z" * 100_000
    hidden = f".azs-final-answer-{executor._answer.nonce}.txt"
    assert [(r.method, r.unquoted_path) for r in server.requests[2:]] == [
        ("GET", f"files/{hidden}/content"),
        ("DELETE", f"files/{hidden}"),
    ]


def test_final_answer_frame_missing_but_exception_present(server, executor):
    server.queue(failed(stdout="lots of output\n"))
    server.queue(ok(value=repr("safe:" + json.dumps("recovered"))))  # a repr'd string is accepted too
    out = executor("final_answer('recovered')")
    assert (out.output, out.is_final_answer) == ("recovered", True)


def test_truncated_frame_that_cannot_be_recovered(server, executor):
    server.queue(failed(stdout=frame(executor, "safe:1")[:20]))
    server.queue(ok(value=""))
    with pytest.raises(AgentError, match="cut off"):
        executor("final_answer(1)")


@pytest.mark.parametrize("encoded", ["safe:{not json", "pickle:gASVAAAA", "no-prefix"])
def test_undeserializable_final_answer_is_a_clear_error(server, executor, encoded):
    server.queue(failed(stdout=frame(executor, encoded)))
    with pytest.raises(AgentError, match="could not be deserialized"):
        executor("final_answer(x)")


def test_traceback_becomes_agent_error_with_stdout_and_traceback(server, executor):
    tb = 'Traceback (most recent call last):\n  File "<cell>", line 2\nNameError: name "y" is not defined\n'
    server.queue(failed(stdout="partial output\n", stderr=tb))
    with pytest.raises(AgentError) as info:
        executor("print('partial output')\ny")
    assert "partial output" in str(info.value) and "NameError" in str(info.value)


def test_traceback_with_succeeded_status_is_still_an_error(server, executor):
    server.queue(ok(stderr="Traceback (most recent call last):\nValueError: boom\n"))
    with pytest.raises(AgentError, match="ValueError"):
        executor("raise ValueError('boom')")


def test_last_expression_and_warnings(server, executor):
    server.queue(ok(stdout="hello\n", value=42, stderr="UserWarning: careful\n"))
    out = executor("print('hello')\n6 * 7")
    assert (out.output, out.is_final_answer) == (42, False)
    assert out.logs == "hello\nUserWarning: careful\n"
    assert executor.last_result.result == 42


def test_image_result_becomes_pil(server, executor):
    server.queue(ok(value=rec.image_value(rec.tiny_png())))
    out = executor("plt.show()")
    assert isinstance(out.output, PIL.Image.Image) and out.output.size == (2, 2)


def test_tools_are_sent_once_with_variables_in_one_execution(server, executor):
    server.queue(ok(), ok(), ok())
    tool = FinalAnswerTool()
    executor.send_variables({"numbers": [1, 2, 3]})
    executor.send_tools({"final_answer": tool})
    assert len(server.requests) == 1
    code = server.requests[0].json["code"]
    assert (
        "numbers" in code
        and "class " in code
        and executor._answer.start in code
        and executor._answer.global_name in code
    )
    executor.send_tools({"final_answer": tool})  # unchanged, session fresh: skipped
    executor.send_variables({})
    assert len(server.requests) == 1
    executor.send_tools({"final_answer": FinalAnswerTool()})  # a new agent's tool instance: same code, skipped
    assert len(server.requests) == 1


def test_tool_source_is_built_once_while_the_tools_are_unchanged(server, executor, monkeypatch):
    import azure_sessions.executor as executor_module

    builds = []
    real = executor_module.get_tools_definition_code
    monkeypatch.setattr(executor_module, "get_tools_definition_code", lambda tools: builds.append(1) or real(tools))
    server.queue(ok(), ok())
    tool = FinalAnswerTool()
    for _ in range(3):
        executor.send_tools({"final_answer": tool})
    assert len(builds) == 1 and len(server.requests) == 1
    executor.send_tools({"final_answer": FinalAnswerTool()})  # another tool object: rebuilt (same code: not sent)
    assert len(builds) == 2 and len(server.requests) == 1


def test_session_loss_is_reported_and_tools_restored(server, executor):
    server.queue(ok(guid="g1"))
    executor.send_tools({"final_answer": FinalAnswerTool()})
    server.queue(ok(stdout="first\n", guid="g1"))
    assert executor("print('first')").logs == "first\n"
    server.queue(ok(stdout="second\n", guid="g2"), ok(guid="g2"))
    out = executor("print('second')")
    assert out.logs.startswith(SESSION_LOST_NOTICE) and out.logs.endswith("second\n")
    assert executor.session_resets == 1
    assert executor._answer.start in server.requests[-1].json["code"]  # tools defined again
    server.queue(ok(stdout="third\n", guid="g2"))
    assert executor("print('third')").logs == "third\n"


def test_install_packages_is_off_by_default_and_never_wildcard(server, make_client):
    ex = AzureDynamicSessionsExecutor(
        client=make_client(), logger=AgentLogger(level=LogLevel.OFF), additional_imports=["*", "numpy"]
    )
    assert ex.install_packages(["numpy"]) == [] and server.requests == []
    ex.allow_package_install = True
    server.queue(ok())
    assert ex.install_packages(["*", "pandas>=2", "evil; rm -rf /", "tqdm"]) == ["pandas>=2", "tqdm"]
    code = server.requests[0].json["code"]
    assert "'pandas>=2', 'tqdm'" in code and "*" not in code.replace("*[", "[") and "rm -rf" not in code
    ex.client.close()


def test_cleanup_deletes_session_and_closes(server, executor):
    server.queue(Reply(204))
    executor.cleanup()
    assert (server.requests[0].method, server.requests[0].path) == ("DELETE", "session")
    with pytest.raises(Exception, match="closed"):
        executor.list_files()


def test_cleanup_is_best_effort(server, executor):
    for _ in range(4):
        server.queue(Reply(500, {"error": {"code": "Boom", "message": "no"}}))
    executor.cleanup()  # does not raise
    assert executor.client._closed


def test_file_helpers_delegate(server, executor, tmp_path):
    server.queue(Reply(200, rec.UPLOAD_2410), Reply(200, rec.LIST_2410), Reply(200, body=b"cert!!\n"), Reply(204))
    src = tmp_path / "cert.txt"
    src.write_bytes(b"cert!!\n")
    assert executor.upload_file(src).name == "cert.txt"
    assert [f.name for f in executor.list_files()] == ["cert.txt"]
    assert executor.download_file("cert.txt", tmp_path / "back.txt") == 7
    executor.delete_file("cert.txt")
    assert [r.method for r in server.requests] == ["POST", "GET", "GET", "DELETE"]


def test_construction(monkeypatch, server):
    monkeypatch.delenv(POOL_ENDPOINT_ENV, raising=False)
    with pytest.raises(ValueError, match=POOL_ENDPOINT_ENV):
        AzureDynamicSessionsExecutor(logger=AgentLogger(level=LogLevel.OFF))
    monkeypatch.setenv(POOL_ENDPOINT_ENV, server.endpoint)
    ex = AzureDynamicSessionsExecutor(credential="tok", logger=AgentLogger(level=LogLevel.OFF))
    assert ex.client.endpoint == server.endpoint and len(ex.session_id) == 36
    assert "tok" not in repr(ex).replace("token", "")
    other = AzureDynamicSessionsExecutor(credential="tok", logger=AgentLogger(level=LogLevel.OFF))
    assert other.session_id != ex.session_id and other._answer.nonce != ex._answer.nonce
    ex.client.close()
    other.client.close()
