"""Run as ``python -I dying_server.py ARM_FILE [emulator options]``: the emulator's command line
(``python -m azure_sessions.emulator``), in a process that kills itself with SIGKILL right after the first signal it
sends to another process once ``ARM_FILE`` exists. That is the worst moment for a kill made of several signals (a
stop, then a kill; or the worker, then the rest of its session): whatever the emulator sends first is all it sends.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout (-I leaves it off sys.path)

ARM = sys.argv[1]
_kill = os.kill


def _dying_after(send):
    def sending(target, signum, *rest):
        result = send(target, signum, *rest)
        if signum != 0 and os.path.exists(ARM):
            _kill(os.getpid(), signal.SIGKILL)
        return result

    return sending


os.kill = _dying_after(os.kill)
os.killpg = _dying_after(os.killpg)
signal.pidfd_send_signal = _dying_after(signal.pidfd_send_signal)

from azure_sessions.emulator.__main__ import main  # noqa: E402  (after the hooks, which it must see)

sys.exit(main(sys.argv[2:]))
