"""Code that hostile-probe tests send into a sandbox, shared by the emulator's and the reliability suites."""

ATTEMPT = """\
def attempt(call):
    try:
        return call()
    except OSError as exc:
        return type(exc).__name__
"""
"""Prepended to probe code: ``attempt(lambda: ...)`` is the call's value, or the name of the OSError it raised."""
