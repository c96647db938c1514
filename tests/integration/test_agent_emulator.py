"""A real smolagents CodeAgent, driven by a scripted model, running its code in the emulator."""

from __future__ import annotations

import pytest
from smolagents import CodeAgent
from smolagents.utils import AgentError

from azure_sessions import SESSION_LOST_NOTICE
from tests.support.scripted_model import ScriptedModel, code_reply


def test_code_agent_two_step_task(make_executor, api_version):
    executor = make_executor(api_version)
    model = ScriptedModel(
        [
            code_reply("numbers = [n * n for n in range(1, 8)]\nprint(sum(numbers))", "First compute the squares."),
            code_reply("final_answer({'total': sum(numbers), 'count': len(numbers)})", "Now answer."),
        ]
    )
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=4, verbosity_level=0)
    answer = agent.run("What is the sum of the squares of 1..7?")
    assert answer == {"total": 140, "count": 7}
    assert len(model.calls) == 2
    # the model saw step 1's printed output
    assert "140" in str(agent.memory.steps[1].observations)


def test_final_answer_with_output_and_later_traceback(make_executor, api_version):
    executor = make_executor(api_version)
    executor.send_tools({"final_answer": _final_answer_tool()})
    out = executor(
        "print('working')\ntry:\n    final_answer([1, 'two', 3.0])\nfinally:\n    print('cleanup')\n    1/0"
    )
    assert out.is_final_answer and out.output == [1, "two", 3.0]
    assert "working" in out.logs and "cleanup" in out.logs and "azs-final-answer" not in out.logs


def test_huge_final_answer_survives_output_truncation(make_executor, api_version):
    executor = make_executor(api_version)
    executor.send_tools({"final_answer": _final_answer_tool()})
    out = executor("print('x' * 20000)\nfinal_answer('y' * 50000)")
    assert out.is_final_answer and out.output == "y" * 50000
    assert not [f for f in executor.list_files() if f.name.startswith(".azs-final-answer")]


def test_traceback_and_last_value(make_executor, api_version):
    executor = make_executor(api_version)
    with pytest.raises(AgentError, match="ZeroDivisionError"):
        executor("print('about to fail')\n1/0")
    out = executor("21 * 2")
    assert (out.output, out.is_final_answer) == (42, False)
    assert executor.last_result is not None and executor.last_result.result == 42


def test_session_loss_is_reported(make_executor, make_client, api_version):
    executor = make_executor(api_version)
    executor.send_tools({"final_answer": _final_answer_tool()})
    executor("value = 1")
    make_client(api_version, identifier=executor.session_id).delete_session()  # the pool recycles the session
    out = executor("print('after')")
    assert out.logs.startswith(SESSION_LOST_NOTICE) and executor.session_resets == 1
    # tools were restored: final_answer works in the new session
    assert executor("final_answer('ok')").output == "ok"


def test_listeners_get_a_report_of_each_execution(make_executor, make_client, api_version):
    executor = make_executor(api_version)
    executor.send_tools({"final_answer": _final_answer_tool()})
    reports = []
    remove = executor.add_listener(reports.append)
    executor("import matplotlib.pyplot as plt\nprint('drawn')\nplt.plot([1, 2])\nplt.show()")
    with pytest.raises(AgentError):
        executor("1/0")
    make_client(api_version, identifier=executor.session_id).delete_session()
    executor("print('after the loss')")
    executor("print('x' * 3)\nfinal_answer('done')")
    remove()
    executor("print('unheard')")
    drawn, failed, after, final = reports
    assert drawn.stdout == "drawn\n" and len(drawn.result.images) == 1 and not drawn.failed
    assert failed.failed and "ZeroDivisionError" in failed.result.stderr and not failed.session_lost
    assert after.session_lost and not final.session_lost
    assert final.final_answer and not final.failed and final.stdout == "xxx\n" and "azs" not in final.stdout


def test_cleanup_deletes_the_session(make_executor, make_client, api_version):
    executor = make_executor(api_version)
    executor("kept = 'x'")
    executor.cleanup()
    probe = make_client(api_version, identifier=executor.session_id)
    assert probe.execute("'kept' in dir()").result in (False, "False")


def _final_answer_tool():
    from smolagents.default_tools import FinalAnswerTool

    return FinalAnswerTool()
