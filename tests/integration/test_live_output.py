"""Live output through the client and the executor, against the emulator over real HTTP: what a cell prints reaches
``on_output`` while it runs, in every api-version; nothing is handed over once ``execute`` returned; the
executor's output listeners never see the final-answer frame."""

from __future__ import annotations

import time

from smolagents.default_tools import FinalAnswerTool

PRINT_SLEEP_PRINT = "import time\nprint('first')\ntime.sleep(1)\nprint('second')"


class Heard:
    """What an ``on_output`` callback received, and when."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[float, str, str]] = []
        self.delay = delay

    def __call__(self, stream: str, text: str) -> None:
        self.calls.append((time.monotonic(), stream, text))
        if self.delay:
            time.sleep(self.delay)

    def text(self, stream: str = "stdout") -> str:
        return "".join(text for _, name, text in self.calls if name == stream)

    def first(self, needle: str) -> float:
        return next(at for at, _, text in self.calls if needle in text)


def test_a_printed_line_reaches_on_output_before_execute_returns(client) -> None:
    assert client.supports_live_output is None  # not known before the first stream
    heard = Heard()
    result = client.execute(PRINT_SLEEP_PRINT, on_output=heard)
    returned = time.monotonic()
    assert result.succeeded, result.stderr
    assert returned - heard.first("first") > 0.7  # it came as printed, a second before the end
    assert heard.text() == result.stdout == "first\nsecond\n"  # all of it, and the result holds it too
    assert client.supports_live_output is True


def test_nothing_is_handed_over_once_execute_returned(make_client) -> None:
    client = make_client("2024-10-02-preview")
    slow = Heard(delay=0.4)  # slower than the output comes: the stream falls behind the execution
    code = "import sys, time\nfor i in range(12):\n    print(i)\n    sys.stdout.flush()\n    time.sleep(0.15)"
    result = client.execute(code, on_output=slow)
    returned = time.monotonic()
    count = len(slow.calls)
    time.sleep(1.5)
    assert len(slow.calls) == count and all(at < returned for at, _, _ in slow.calls)
    assert result.stdout == "".join(f"{i}\n" for i in range(12))  # the result has what the preview missed
    assert result.stdout.startswith(slow.text())


def test_a_failing_callback_does_not_fail_the_execution(client) -> None:
    def broken(stream: str, text: str) -> None:
        raise RuntimeError("the caller's bug")

    result = client.execute("print('still runs')", on_output=broken)
    assert result.succeeded and result.stdout == "still runs\n"


def test_a_service_without_the_route_is_detected_and_not_asked_again(emulator, make_client, monkeypatch) -> None:
    monkeypatch.setattr(emulator, "live_output", False)  # answers like the service: no such operation
    client = make_client("2024-10-02-preview")
    heard = Heard()
    assert client.execute("print(1)", on_output=heard).stdout == "1\n"
    assert client.supports_live_output is False and heard.calls == []
    monkeypatch.setattr(emulator, "live_output", True)
    assert client.execute("print(2)", on_output=heard).stdout == "2\n"
    assert heard.calls == []  # remembered: not asked again


# ---- the executor ---------------------------------------------------------------------------------------------
def test_output_listeners_hear_agent_code_but_never_the_final_answer_frame(make_executor) -> None:
    executor = make_executor("2024-10-02-preview")
    heard = Heard()
    remove = executor.add_output_listener(heard)
    executor.send_tools({"final_answer": FinalAnswerTool()})
    assert heard.calls == []  # setup code is the executor's own: not previewed
    output = executor.run_code_raise_errors("print('working')\nfinal_answer('the answer')")
    assert output.is_final_answer and output.output == "the answer"
    assert heard.text() == "working\n"
    # the frame split across pieces of the stream: each half arrives on its own
    frame = executor._answer
    split = len(frame.start) // 2
    code = (
        "import sys, time\nprint('before')\nsys.stdout.flush()\ntime.sleep(0.3)\n"
        f"sys.stdout.write({frame.start[:split]!r})\nsys.stdout.flush()\ntime.sleep(0.3)\n"
        f"sys.stdout.write({frame.start[split:]!r} + 'safe:\"x\"' + {frame.end[:5]!r})\nsys.stdout.flush()\n"
        f"time.sleep(0.3)\nsys.stdout.write({frame.end[5:]!r} + '\\n')\nprint('after')"
    )
    heard.calls.clear()
    executor.run_code_raise_errors(code)
    assert heard.first("after") - heard.first("before") > 0.6, heard.calls  # the pieces really came apart
    assert heard.text().replace("\n", "") == "beforeafter"
    assert all(frame.nonce not in text and "<<" not in text for _, _, text in heard.calls)
    remove()
    heard.calls.clear()
    executor.run_code_raise_errors("print('not heard')")
    assert heard.calls == []
