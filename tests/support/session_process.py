"""Run as ``python -I session_process.py SPEC_JSON``: a session's worker as far as the seccomp policy goes.

It loads ``policy.py`` by path (as a worker loads its helpers), installs the policy of ``spec["tier"]`` (none when
it is null) with the supervisor's socket ``spec["notify_fd"]`` if given, then runs ``spec["code"]`` with ``args``,
``applied`` (what ``install`` returned) and ``report(value)`` (one JSON line on stdout) in its namespace. Started
by ``tests/support/session_procs.py`` in a session of its own, so its session id is its pid.
"""

import importlib.util
import json
import os
import sys

spec = json.loads(sys.argv[1])
loader = importlib.util.spec_from_file_location("session_policy", spec["policy"])
policy = importlib.util.module_from_spec(loader)
loader.loader.exec_module(policy)
applied = None
if spec.get("rules"):
    rules = policy.TierRules(*spec["rules"])
    applied = policy.install(rules, protected_pids=spec.get("protected") or (), notify_sock=spec.get("notify_fd"))


def report(value: object) -> None:
    os.write(1, (json.dumps(value) + "\n").encode())


namespace = {"__name__": "__session__", "args": spec.get("args") or {}, "applied": applied, "report": report}
exec(compile(spec["code"], "<session>", "exec"), namespace)
