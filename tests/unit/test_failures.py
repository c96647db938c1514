"""The one parser of an execution's failure, on stderr as the emulator's IPython kernel and plain Python write it."""

from __future__ import annotations

import pytest

from azure_sessions.dialects import parse_execution
from azure_sessions.failures import execution_error
from tests.unit import recordings as rec

RULE = "-" * 75
SPACE = " "  # IPython writes "KeyboardInterrupt: " with a trailing space
ZERO = f"""{RULE}
ZeroDivisionError                         Traceback (most recent call last)
Cell In[1], line 1
----> 1 1/0

ZeroDivisionError: division by zero
"""
MULTILINE = f"""{RULE}
ValueError                                Traceback (most recent call last)
Cell In[2], line 1
----> 1 raise ValueError('a\\nDone')

ValueError: a
Done
"""
CHAINED = f"""{RULE}
ZeroDivisionError                         Traceback (most recent call last)
Cell In[6], line 2
----> 2   1/0

ZeroDivisionError: division by zero

The above exception was the direct cause of the following exception:

KeyError                                  Traceback (most recent call last)
Cell In[6], line 4
----> 4   raise KeyError('k') from e

KeyError: 'k'
"""
TIMED_OUT = f"""{RULE}
KeyboardInterrupt                         Traceback (most recent call last)
Cell In[7], line 1
----> 1 import time; time.sleep(5)

KeyboardInterrupt:{SPACE}

TimeoutError: the execution exceeded its timeout of 2 seconds and was interrupted (KeyboardInterrupt). The session and its variables were kept.
"""
STOPPED = f"""{RULE}
KeyboardInterrupt                         Traceback (most recent call last)
Cell In[11], line 1
----> 1 import time; time.sleep(10)

KeyboardInterrupt:{SPACE}
"""
SYNTAX = """  Cell In[3], line 1
    def (
        ^
SyntaxError: invalid syntax

"""
SYSTEM_EXIT = """An exception has occurred, use %tb to see the full traceback.

SystemExit: 3

/venv/lib/python3.11/site-packages/IPython/core/interactiveshell.py:3516: UserWarning: To exit: use 'exit', 'quit', or Ctrl-D.
  warn("To exit: use 'exit', 'quit', or Ctrl-D.", stacklevel=1)
"""
PLAIN_PYTHON = """Traceback (most recent call last):
  File "<stdin>", line 2, in <module>
  File "/usr/lib/python3/dist-packages/pandas/io/parsers.py", line 9, in read
pandas.errors.ParserError: Error tokenizing data. C error: Expected 1 fields in line 3, saw 2
"""
CUT_OFF = f"""{RULE}
FinalAnswerException                      Traceback (most recent call last)
Cell In[4], line 2
      1 print('x' * 20000)
----> 2 final_answer('y' * 50"""
COLOURED = "\x1b[0;31mNameError\x1b[0m    Traceback (most recent call last)\n\x1b[0;31mNameError\x1b[0m: name 'x' is not defined\n"


@pytest.mark.parametrize(
    ("stderr", "name", "value", "interrupted"),
    [
        (ZERO, "ZeroDivisionError", "division by zero", False),
        (MULTILINE, "ValueError", "a\nDone", False),
        (CHAINED, "KeyError", "'k'", False),
        (
            TIMED_OUT,
            "TimeoutError",
            "the execution exceeded its timeout of 2 seconds and was interrupted "
            "(KeyboardInterrupt). The session and its variables were kept.",
            True,
        ),
        (STOPPED, "KeyboardInterrupt", "", True),
        (SYNTAX, "SyntaxError", "invalid syntax", False),
        (SYSTEM_EXIT, "SystemExit", "3", False),
        (PLAIN_PYTHON, "ParserError", "Error tokenizing data. C error: Expected 1 fields in line 3, saw 2", False),
        (CUT_OFF, "FinalAnswerException", "", False),
        (COLOURED, "NameError", "name 'x' is not defined", False),
        (
            "SessionLost: the worker died. The session was deleted.\n",
            "SessionLost",
            "the worker died. The session was deleted.",
            False,
        ),
        ("", "", "", False),
    ],
)
def test_the_exception_that_ended_the_code(stderr, name, value, interrupted):
    error = execution_error(stderr, failed=True)
    assert error is not None
    assert (error.name, error.value, error.interrupted) == (name, value, interrupted)


def test_the_traceback_starts_at_the_first_header_and_keeps_the_chain():
    error = execution_error("a warning printed first\n" + CHAINED, failed=True)
    assert error.traceback.startswith(RULE + "\nZeroDivisionError")
    assert error.traceback.endswith("KeyError: 'k'")
    assert execution_error(SYNTAX, failed=True).traceback == SYNTAX.rstrip()


def test_success_is_no_error_unless_stderr_holds_a_traceback():
    assert execution_error("a warning\n", failed=False) is None
    assert execution_error("", failed=False) is None
    raised = execution_error(ZERO, failed=False)  # what the service reports for an exception is not documented
    assert raised is not None and raised.name == "ZeroDivisionError"


def test_the_azure_error_object_when_stderr_names_nothing():
    error = execution_error("", failed=True, error={"code": "ExecutionTimeout", "message": "it took too long"})
    assert (error.name, error.value, error.label) == (
        "ExecutionTimeout",
        "it took too long",
        "ExecutionTimeout: it took too long",
    )
    named = execution_error(ZERO, failed=True, error={"code": "Other", "message": "ignored"})
    assert named.name == "ZeroDivisionError"


def test_labels():
    assert execution_error(MULTILINE, failed=True).label == "ValueError: a"
    assert execution_error(STOPPED, failed=True).label == "KeyboardInterrupt"
    assert execution_error("", failed=True).label == "Error"


def test_parse_execution_sets_the_error_once():
    failed = parse_execution(rec.EXECUTE_2402_FAILURE)
    assert failed.error is not None and failed.error.name == "ZeroDivisionError" and failed.status == "Failed"
    assert parse_execution(rec.EXECUTE_2410).error is None
    body = rec.resource_execution(stderr=ZERO, status="Failed")
    assert parse_execution(body).error.value == "division by zero"
    no_status = parse_execution({"properties": {"stderr": "Traceback (most recent call last):\nKeyError: 1\n"}})
    assert no_status.status == "Failed" and no_status.error.name == "KeyError"
    unfinished = parse_execution({"id": "e", "status": "Running"})  # still running when the client stopped waiting
    assert unfinished.error is not None and unfinished.error.label == "Error"
    assert parse_execution({"id": "e", "status": "Canceled"}).error is not None
