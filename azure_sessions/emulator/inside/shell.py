"""The IPython shell a session gets: no ``Out[n]:`` prompt, displayed images kept as the cell's result, ``!``
commands whose output is captured like Python's, ``exit()`` ignored."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

_SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def make_shell(images: Callable[[], list[bytes]], command: Callable[[str], str]) -> Any:
    """A session's shell. ``images()`` is the running cell's list of displayed images; ``command(line)`` is a ``!``
    command line as it must run (``/mnt/data`` and ``/tmp`` mapped where Python maps them)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class QuietDisplayHook(DisplayHook):
        """Records the last expression's value without printing ``Out[n]:``."""

        def compute_format_data(self, result):
            return {}, {}

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            pass

    class CapturingPublisher(DisplayPublisher):
        """display(): images become the cell's image result, everything else prints as text."""

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            png = data.get("image/png")
            if png is not None:
                images().append(base64.b64decode(png) if isinstance(png, str) else png)
            elif "text/plain" in data:
                print(data["text/plain"])

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "NoColor"
    config.InteractiveShell.xmode = "Context"

    class SessionShell(InteractiveShell):
        displayhook_class = QuietDisplayHook
        display_pub_class = CapturingPublisher

        def ask_exit(self):
            """``exit()``/``quit()`` would end the kernel; a session keeps running, so this only warns."""
            print("exit() is ignored: the session keeps running.", file=sys.stderr)

    shell = SessionShell.instance(config=config)
    shell._showtraceback = lambda etype, evalue, stb: print(shell.InteractiveTB.stb2text(stb), file=sys.stderr)

    def system(cmd: str) -> None:
        """``!cmd``: a shell whose output goes to the captured fds 1/2 (no pty, so no ``\\r\\n``)."""
        proc = subprocess.Popen(command(shell.var_expand(cmd, depth=1)), shell=True, executable=_SHELL,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            shell.user_ns["_exit_code"] = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise

    def getoutput(cmd: str, split: bool = True, depth: int = 0):
        """``x = !cmd`` / ``!!cmd``: the command's output as an SList."""
        from IPython.utils.text import SList

        line = command(shell.var_expand(cmd, depth=depth + 1))
        proc = subprocess.run(line, shell=True, executable=_SHELL, stdin=subprocess.DEVNULL, capture_output=True)
        shell.user_ns["_exit_code"] = proc.returncode
        out = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
        return SList(out.splitlines()) if split else out

    shell.system = shell.system_piped = system
    shell.getoutput = getoutput
    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    warnings.filterwarnings("ignore", message=".*is non-interactive, and thus cannot be shown")
    return shell
