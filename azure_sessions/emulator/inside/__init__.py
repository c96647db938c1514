"""Inside the sandbox: the session's side of the emulator, one job per file.

Every file here runs in the sandbox, so none imports anything outside this directory (the standard library, and
IPython, ``landlock`` and ``pyseccomp`` where a file needs them); they import each other relatively. The host starts
``main.py`` by its path (under bubblewrap this directory is bound read-only into the sandbox), which loads the
directory as the package ``_emulator_inside``. The host itself imports two of them as
``azure_sessions.emulator.inside``: ``protocol`` (the messages and the worker's configuration, shared by both sides)
and ``strays`` (ending a session's processes).

| File | Its one job |
|---|---|
| ``main.py`` | The script the host starts: loads this directory as a package, runs the fork server |
| ``forkserver.py`` | The template: prepared once, forks each new session's worker |
| ``session.py`` | A forked worker becoming one session's: the set-up sequence, step by step |
| ``kernel.py`` | The session's IPython shell behind the protocol: runs cells, answers the host |
| ``shell.py`` | The IPython shell a session gets (quiet display hook, images, ``!`` commands) |
| ``capture.py`` | File descriptors 1 and 2 captured per cell (and streamed while it runs) |
| ``results.py`` | A cell's last value and figures as the wire's result |
| ``limits.py`` | A private uid and the resource limits |
| ``protocol.py`` | The messages, their framing, the worker's typed configuration |
| ``namespaces.py`` | The bubblewrap tier: a forked worker's own namespaces |
| ``confine.py`` | The Landlock tier: Landlock and seccomp |
| ``pathmap.py`` | Without a mount namespace: ``/mnt/data`` and ``/tmp`` mapped for Python's file APIs |
| ``strays.py`` | Ending what a timed-out cell left running (the host imports it too) |
"""
