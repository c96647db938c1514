"""steps.py turns smolagents stream events into chat messages: checked with real smolagents objects, no browser."""

from __future__ import annotations

from smolagents.memory import ActionStep, FinalAnswerStep, PlanningStep, ToolCall
from smolagents.models import ChatMessageStreamDelta
from smolagents.monitoring import AgentLogger, LogLevel, Timing, TokenUsage
from smolagents.utils import AgentExecutionError, AgentParsingError

from azure_sessions import ExecutionResult
from azure_sessions.errors import PoolFullError
from azure_sessions.executor import CodeExecutionError
from azure_sessions.failures import execution_error
from playground.formatting import MAX_SHOWN_CHARS, fence
from playground.steps import (
    NO_LIVE_OUTPUT,
    LiveText,
    PythonAnswer,
    RunRenderer,
    StepExtras,
    Totals,
    split_model_output,
    split_observations,
    step_body,
    strip_code_fences,
)

LOGGER = AgentLogger(level=LogLevel.OFF)


def code_error(stderr: str) -> AgentExecutionError:
    """A step's error as smolagents makes it of the executor's CodeExecutionError (raised while handling it)."""
    error = execution_error(stderr, failed=True)
    assert error is not None
    raised = CodeExecutionError(stderr, LOGGER, ExecutionResult("Failed", stderr=stderr, error=error), error)
    wrapped = AgentExecutionError(str(raised), LOGGER)
    wrapped.__context__ = raised
    return wrapped


def action_step(number=1, *, code="print(1)", logs="1\n", output="None", error=None, final=False, duration=1.5):
    return ActionStep(
        step_number=number,
        timing=Timing(start_time=100.0, end_time=100.0 + duration),
        model_output=f"Thought: step {number}\n<code>\n{code}\n</code>",
        code_action=code,
        observations=None if error else f"Execution logs:\n{logs}Last output from code snippet:\n{output}",
        error=(code_error(error) if isinstance(error, str) else error) if error else None,
        token_usage=TokenUsage(input_tokens=1200, output_tokens=34),
        is_final_answer=final,
    )


def test_fence_is_closed_and_survives_backticks_inside():
    text = fence("a ``` b", "text")
    assert text.startswith("````text\n") and text.endswith("\n````")
    assert fence("x").count("```") == 2


def test_split_model_output_while_streaming_and_done():
    assert split_model_output("Thought: plan it") == ("plan it", None)
    assert split_model_output("Thought: go\n<code>\nx = 1\npri") == ("go", "x = 1\npri")
    assert split_model_output("Thought: go\n<code>\nx = 1\n</code>") == ("go", "x = 1")
    assert split_model_output("ok\n```python\nprint(2)\n```\n") == ("ok", "print(2)")


def test_split_observations():
    assert split_observations("Execution logs:\nhi\nLast output from code snippet:\n42") == ("hi\n", "42")
    assert split_observations(None) == ("", None)


def test_step_body_has_code_logs_result_error_in_closed_fences():
    body = step_body("think", "print(1)", "1\n", "42", "Traceback: boom")
    assert "```python\nprint(1)\n```" in body
    assert "**Output**\n```text\n1\n```" in body
    assert "**Result**\n```text\n42\n```" in body
    assert "**Error**\n```text\nTraceback: boom\n```" in body
    assert body.count("```") % 2 == 0


def test_a_run_goes_pending_thinking_running_done_then_final_answer():
    r = RunRenderer()
    r.begin_step(1)
    first = r.messages[0]
    assert first.metadata == {"title": "Step 1 · thinking…", "status": "pending"}
    for chunk in ("Thought: let me", " compute\n<co", "de>\nprint(6*7)\n"):
        r.on_event(ChatMessageStreamDelta(content=chunk))
    assert "let me compute" in first.content and "```python\nprint(6*7)\n```" in first.content
    r.on_event(ToolCall(name="python_interpreter", arguments="print(6*7)", id="call_1"))
    assert first.metadata["title"] == "Step 1 · running code…" and first.metadata["status"] == "pending"
    r.on_event(action_step(1, code="print(6*7)", logs="42\n"))
    assert first.metadata["status"] == "done" and first.metadata["title"] == "Step 1"
    assert first.metadata["duration"] == 1.5 and first.metadata["log"] == "1,200 in · 34 out tokens"
    assert "```text\n42\n```" in first.content
    # the next step is pending at once
    assert r.messages[-1].metadata == {"title": "Step 2 · thinking…", "status": "pending"}
    r.on_event(action_step(2, code="final_answer(42)", logs="", output="42", final=True))
    assert r.messages[1].metadata["title"] == "Step 2 · final answer"
    assert "Result" not in r.messages[1].content
    r.on_event(FinalAnswerStep(output=42))
    assert r.messages[-1].content == "**Final answer**\n\n42" and not r.messages[-1].metadata
    assert r.current is None


def test_error_step_is_readable_with_traceback():
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(
        action_step(1, code="1/0", error="Traceback (most recent call last):\nZeroDivisionError: division by zero")
    )
    message = r.messages[0]
    assert message.metadata["title"] == "Step 1 · ZeroDivisionError: division by zero"
    assert "**Error**\n```text\nTraceback (most recent call last):\nZeroDivisionError" in message.content


def test_images_files_and_notices_follow_their_step():
    r = RunRenderer()
    r.begin_step(1)
    extras = StepExtras(images=["/tmp/a.png"], files=["/tmp/out.csv"], notice="Sandbox recycled.")
    r.on_event(action_step(1), extras)
    contents = [m.content for m in r.messages[1:4]]
    assert contents[0] == "⚠️ Sandbox recycled."
    assert contents[1] == [{"path": "/tmp/a.png", "mime_type": "image/png"}]
    assert contents[2] == [{"path": "/tmp/out.csv", "mime_type": "text/csv"}]


def test_repeated_last_step_after_max_steps_is_rendered_once():
    r = RunRenderer()
    r.begin_step(1)
    step = action_step(1)
    r.on_event(step)
    r.on_event(step)
    assert sum(1 for m in r.messages if m.metadata.get("title") == "Step 1") == 1
    r.on_event(FinalAnswerStep(output="gave up"))
    assert [m.metadata.get("title") for m in r.messages] == ["Step 1", None]


def test_planning_step():
    r = RunRenderer()
    r.begin_step(1)
    plan = PlanningStep(
        model_input_messages=[], model_output_message=None, plan="1. load\n2. plot", timing=Timing(1, 2)
    )
    r.on_event(plan)
    assert r.messages[0].metadata["title"] == "Plan" and "2. plot" in r.messages[0].content
    assert r.messages[1].metadata["title"] == "Step 1 · thinking…"


def test_stopped_and_failed_close_the_pending_step():
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(ChatMessageStreamDelta(content="Thought: hmm"))
    r.stopped()
    assert r.messages[0].metadata == {"title": "Step 1 · stopped", "status": "done"}
    assert "Stopped" in r.messages[-1].content
    r = RunRenderer()
    r.begin_step(1)
    r.failed(RuntimeError("model down"))
    assert len(r.messages) == 1 and "model down" in r.messages[0].content  # the empty pending step is removed


def test_direct_python_run_answers_in_a_plain_message():
    r = RunRenderer()
    r.direct_start("print(1)\n2")
    assert r.messages[0].metadata["status"] == "pending"
    r.direct_done(PythonAnswer("1\n", "2", duration=0.25), StepExtras(images=["/tmp/p.png"]))
    answer = r.messages[0]
    assert not answer.metadata  # not a collapsible block: readable without a click
    assert "```text\n1\n```" in answer.content and "**Result**\n```text\n2\n```" in answer.content
    assert "0.25 s" in answer.content
    assert r.messages[1].content == [{"path": "/tmp/p.png", "mime_type": "image/png"}]
    r = RunRenderer()
    traceback = "Traceback (most recent call last):\nZeroDivisionError: division by zero"
    r.direct_done(PythonAnswer(error=execution_error(traceback, failed=True), duration=0.1))
    assert len(r.messages) == 1 and "⚠️ **ZeroDivisionError**: division by zero" in r.messages[0].content
    assert fence(traceback, "text") in r.messages[0].content
    r = RunRenderer()
    r.direct_done(PythonAnswer(duration=0.1))
    assert "no output" in r.messages[0].content
    r = RunRenderer()
    r.direct_done(PythonAnswer(problem="final_answer() was called but its value was cut off"))
    assert "⚠️ **Error**" in r.messages[0].content and "cut off" in r.messages[0].content


def test_a_python_message_that_only_plots_says_so_rather_than_no_output():
    r = RunRenderer()
    r.direct_done(PythonAnswer(duration=0.1), StepExtras(images=["/tmp/p.png"], files=["/tmp/a.csv", "/tmp/b.csv"]))
    assert "✓ Done: 1 image and 2 files below." in r.messages[0].content
    assert "no output" not in r.messages[0].content


def test_a_failed_steps_title_and_the_last_error_of_a_run_without_answer():
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(
        action_step(1, code="x", error="Traceback (most recent call last):\nNameError: name 'x' is not defined")
    )
    assert r.messages[0].metadata["title"] == "Step 1 · NameError: name 'x' is not defined"
    r.finish()
    assert "The run ended on NameError" in r.messages[-1].content and not r.messages[-1].metadata
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(action_step(1, error="Traceback (most recent call last):\nKeyboardInterrupt"))
    assert r.messages[0].metadata["title"] == "Step 1 · interrupted"


def test_the_title_reads_the_structured_error_not_the_text():
    r = RunRenderer()
    r.begin_step(1)
    # the text names a KeyboardInterrupt (the code printed one), the code raised a ValueError
    r.on_event(action_step(1, error="KeyboardInterrupt\nTraceback (most recent call last):\nValueError: bad"))
    assert r.messages[0].metadata["title"] == "Step 1 · ValueError: bad"
    r = RunRenderer()
    r.begin_step(1)
    # an error that did not come from code: the agent error's kind and first line, whatever the text says
    r.on_event(action_step(1, error=AgentParsingError("Your code snippet is invalid\nKeyError: x", LOGGER)))
    assert r.messages[0].metadata["title"] == "Step 1 · AgentParsingError: Your code snippet is invalid"


def test_a_step_that_found_the_sandbox_service_full_says_so():
    full = PoolFullError("execute could not get a session: the session pool is at its maximum", status_code=404)
    wrapped = AgentExecutionError(str(full), LOGGER)
    wrapped.__context__ = full
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(action_step(1, error=wrapped))
    assert r.messages[0].metadata["title"] == "Step 1 · sandbox service full"
    r.refused("The sandbox service is full right now; try again in a minute.")
    r.finish()
    assert r.messages[-1].content == "⚠️ The sandbox service is full right now; try again in a minute."
    assert not any("The run ended on" in str(m.content) for m in r.messages)  # said once, as a sentence


def test_live_output_shows_in_the_running_steps_block_until_its_result_replaces_it():
    r = RunRenderer()
    r.begin_step(1)
    r.on_event(ChatMessageStreamDelta(content="Thought: count\n<code>\nfor i in range(3): print(i)\n</code>"))
    r.output("ignored: no code runs yet")
    assert "ignored" not in r.messages[0].content
    r.on_event(ToolCall(name="python_interpreter", arguments="for i in range(3): print(i)", id="call_1"))
    r.output("0\n")
    r.output("1\n")
    block = r.messages[0]
    assert "count" in block.content and "**Output**\n```text\n0\n1\n```" in block.content
    assert block.metadata["status"] == "pending"
    r.on_event(action_step(1, code="for i in range(3): print(i)", logs="0\n1\n2\n"))
    assert "**Output**\n```text\n0\n1\n2\n```" in block.content  # the result replaced the preview
    r.output("late\n")  # after the step: not shown anywhere
    assert all("late" not in str(m.content) for m in r.messages)


def test_live_output_in_python_mode_and_a_sandbox_that_cannot_stream():
    r = RunRenderer()
    r.direct_start("print(1)")
    r.output("1\n")
    assert "```python\nprint(1)\n```" in r.messages[0].content and "```text\n1\n```" in r.messages[0].content
    r.direct_done(PythonAnswer("1\n", duration=0.1))
    assert len(r.messages) == 1 and not r.messages[0].metadata
    r = RunRenderer()
    r.set_live_output(False)
    r.direct_start("import time; time.sleep(60)")
    assert NO_LIVE_OUTPUT in r.messages[0].content
    r.begin_step(1)
    r.on_event(ToolCall(name="python_interpreter", arguments="x = 1", id="call_1"))
    assert NO_LIVE_OUTPUT in r.messages[-1].content


def test_the_running_block_counts_its_seconds():
    r = RunRenderer()
    r.direct_start("import time; time.sleep(60)")
    started = r.running_since
    assert started is not None
    assert r.view(started + 0.5)[0].metadata["title"] == "Python · running in the sandbox…"
    assert r.view(started + 12.2)[0].metadata["title"] == "Python · running in the sandbox · 12 s"
    assert r.messages[0].metadata["title"] == "Python · running in the sandbox…"  # only the copy says it


def test_stopped_python_code_keeps_what_it_printed():
    r = RunRenderer()
    r.direct_start("for i in range(60): print(i)")
    r.output("0\n1\n")
    r.failed("the sandbox service stopped answering")
    assert "```text\n0\n1\n```" in r.messages[0].content and r.messages[0].metadata["status"] == "done"


def test_live_text_keeps_its_head_and_latest_tail_within_the_cap():
    live = LiveText()
    for i in range(20_000):
        live.add(f"line {i}\n")
    shown = str(live)
    assert shown.startswith("line 0\n") and shown.endswith("line 19999\n")
    assert len(shown) <= MAX_SHOWN_CHARS + 60 and "characters cut" in shown
    assert len(live.head) + len(live.tail) <= MAX_SHOWN_CHARS
    small = LiveText()
    small.add("a")
    small.add("b")
    assert str(small) == "ab"


def test_strip_code_fences():
    assert strip_code_fences("```python\nprint(1)\n```") == "print(1)"
    assert strip_code_fences("print(1)") == "print(1)"


def test_totals():
    totals = Totals()
    totals.add_step(action_step(1, duration=2.0))
    totals.add_step(action_step(2, duration=1.0))
    assert (totals.steps, totals.input_tokens, totals.output_tokens, totals.seconds) == (2, 2400, 68, 3.0)


def test_an_image_result_is_not_shown_as_its_repr():
    from PIL import Image

    r = RunRenderer()
    r.begin_step(1)
    step = action_step(1, output="<PIL.PngImagePlugin.PngImageFile image mode=RGBA size=10x10>")
    step.action_output = Image.new("RGB", (10, 10))
    r.on_event(step, StepExtras(images=["/tmp/output-1.png"]))
    assert "Result" not in r.messages[0].content and "PIL" not in r.messages[0].content


def test_a_python_message_is_shown_as_code_and_an_agent_message_as_markdown():
    from playground.chat import user_messages

    code = "for i in range(2):\n    print(__name__, i)"
    (shown,) = user_messages(code, [], as_code=True)
    assert shown.content == "```python\nfor i in range(2):\n    print(__name__, i)\n```"
    fenced = "Run this:\n```python\nx_y = 1\n```"
    assert user_messages(fenced, [], as_code=True)[0].content == fenced  # its code is already in a block
    assert user_messages("**bold** __name__", [])[0].content == "**bold** __name__"  # agent mode: markdown
