"""Code that hostile-probe tests send into a sandbox, shared by the emulator's and the reliability suites, and the
outcomes that count as contained.

A probe's outcome depends on where things are, not only on how well the sandbox holds: a host path that Landlock
refuses gives PermissionError, but the same path below /tmp (which the Landlock tier maps to the session's scratch
directory) or below a bubblewrap mask gives FileNotFoundError. Both mean "could not reach it"; where the checkout was
cloned (/tmp, /var/tmp, a home, a 0700 `mktemp -d`) must not decide whether a containment test passes. These sets
accept every contained outcome and nothing else: a value read, a listing of the real directory, a signal delivered.
"""

from __future__ import annotations

from typing import Any

ATTEMPT = """\
def attempt(call):
    try:
        return call()
    except OSError as exc:
        return type(exc).__name__
"""
"""Prepended to probe code: ``attempt(lambda: ...)`` is the call's value, or the name of the OSError it raised."""

UNREACHABLE = frozenset({"PermissionError", "FileNotFoundError"})
"""A host path the sandbox could not open or list: refused, or not there in the sandbox's view of the files."""

UNSIGNALLABLE = frozenset({"PermissionError", "ProcessLookupError"})
"""A host process the sandbox could not signal: refused, or not there in the sandbox's view of the processes."""


def unreachable(*outcomes: Any) -> bool:
    """Whether every one of these ``attempt(...)`` outcomes is an error in ``UNREACHABLE`` (a value is not)."""
    return all(isinstance(outcome, str) and outcome in UNREACHABLE for outcome in outcomes)


def checkout_out_of_reach(listing: Any) -> bool:
    """Whether ``attempt(lambda: os.listdir(<the project checkout>))`` shows nothing of it: unreachable, or (bubblewrap)
    the empty mask over it with at most the Python environment bound back."""
    return unreachable(listing) or (isinstance(listing, list) and set(listing) <= {".venv"})
