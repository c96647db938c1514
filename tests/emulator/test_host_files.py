"""What a worker can read of the host, in each isolating tier: the allow-list both tiers read (``SYSTEM_READ_ONLY``
and the Python environment) and nothing else, while shell commands, numpy, pandas and a matplotlib plot keep working.

Bubblewrap binds the allow-list; Landlock allows reading below it. A world-readable file anywhere else (a canary in
``/srv``, ``/opt`` or ``/var/tmp``, another checkout's ``.git/config``) is "not there" (bubblewrap) or "permission
denied" (Landlock): both count as out of reach, wherever the canaries could be made.
"""

from __future__ import annotations

import ast
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from azure_sessions.emulator.tiers import SYSTEM_READ_ONLY, system_binds
from tests.emulator.conftest import new_id
from tests.support.probes import ATTEMPT, unreachable

CANARY_HOMES = ("/srv", "/opt", "/var/tmp")
"""World-readable directories outside the allow-list, in the order a canary is made in the first writable one."""


@pytest.fixture(scope="module")
def canaries() -> Iterator[SimpleNamespace]:
    """A world-readable canary and a fake other checkout (its ``.git/config`` holding a token), in a world-readable
    directory outside the allow-list."""
    home = next((h for h in CANARY_HOMES if os.path.isdir(h) and os.access(h, os.W_OK | os.X_OK)), None)
    if home is None:
        pytest.skip(f"none of {CANARY_HOMES} is writable here, so no canary can be made outside the allow-list")
    base = Path(tempfile.mkdtemp(prefix="sandbox-canaries-", dir=home))
    secret = f"canary-{secrets.token_hex(8)}"
    try:
        canary = base / "canary.txt"
        config = base / "other-checkout" / ".git" / "config"
        config.parent.mkdir(parents=True)
        canary.write_text(secret)
        config.write_text(f'[remote "origin"]\n\turl = https://user:{secret}@example.com/repo.git\n')
        for path in (base, config.parent.parent, config.parent):
            path.chmod(0o755)
        for path in (canary, config):
            path.chmod(0o644)
        for path in (canary, config):  # readable by any uid, as far as the host's permissions go
            assert all(p.stat().st_mode & stat.S_IXOTH for p in path.parents), path
            assert path.stat().st_mode & stat.S_IROTH, path
        yield SimpleNamespace(base=base, canary=canary, config=config, secret=secret)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_world_readable_file_outside_the_allow_list_is_out_of_reach(tier, canaries):
    code = ATTEMPT + (
        "import os, subprocess\n"
        f"attempts, shell = ([attempt(lambda: open({str(canaries.canary)!r}).read()),\n"
        f"  attempt(lambda: open({str(canaries.config)!r}).read()),\n"
        f"  attempt(lambda: os.listdir({str(canaries.base)!r})),\n"
        f"  attempt(lambda: os.listdir({str(canaries.base.parent)!r}))],\n"
        f" subprocess.run(['cat', {str(canaries.canary)!r}, {str(canaries.config)!r}], capture_output=True, text=True))\n"
        "attempts, shell.returncode, shell.stdout"
    )
    result = tier.api.run(new_id(), code)
    assert result["status"] == "Succeeded", result["stderr"]
    assert canaries.secret not in str(result), result
    attempts, returncode, stdout = ast.literal_eval(result["executionResult"])
    assert unreachable(*attempts[:3]), attempts
    assert unreachable(attempts[3]) or canaries.base.name not in attempts[3], attempts  # its parent: not listed
    assert returncode != 0 and stdout == "", (returncode, stdout)


def test_shell_commands_and_the_libraries_keep_working(tier):
    """What the allow-list must hold for a session: programs through merged-/usr links and /etc/alternatives, the
    dynamic loader and its cache, the locale and time zone, the CPU count, numpy, pandas and a matplotlib plot."""
    identifier = new_id()
    shell = tier.api.run(identifier, "!echo $((6 * 7)); ls /mnt/data > /dev/null && echo listed; "
                         "awk 'BEGIN { print \"awk\" }'; date +%Z > /dev/null && echo dated")  # fmt: skip
    assert shell["stdout"].split() == ["42", "listed", "awk", "dated"], shell
    code = (
        "import os, subprocess, time\n"
        "bash = subprocess.run(['bash', '-c', 'echo \"$BASH_VERSION\" | cut -c1; nproc; cat /etc/os-release | head -1'],"
        " capture_output=True, text=True)\n"
        "(bash.returncode, len(bash.stdout.splitlines()), os.cpu_count() >= 1, time.tzname[0] != '')"
    )
    assert tier.api.run(identifier, code)["executionResult"] == "(0, 3, True, True)"
    code = (
        "import numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
        "frame = pd.DataFrame({'x': np.arange(10), 'y': np.arange(10) ** 2})\n"
        "frame.plot(x='x', y='y'); plt.title('squares'); plt.show()\n"
        "int(frame.y.sum())"
    )
    plot = tier.api.run(identifier, code)
    assert plot["status"] == "Succeeded", plot["stderr"]
    assert plot["executionResult"]["type"] == "image" and plot["executionResult"]["format"] == "png", plot


def test_bubblewrap_shows_exactly_the_allow_list_with_links_kept(tmp_path):
    """The one list both tiers read, as bubblewrap binds it: directories bound, a merged-/usr link kept as the same
    link, a link that leads elsewhere shown as its target, what the host lacks left out."""
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "lib").symlink_to(tmp_path / "elsewhere")
    system = tuple(str(tmp_path / name) for name in ("usr", "bin", "lib", "missing"))
    args = system_binds(system, made={tmp_path, *tmp_path.parents})
    usr, bin_, lib = (str(tmp_path / name) for name in ("usr", "bin", "lib"))
    assert args == ["--ro-bind", usr, usr, "--symlink", "usr/bin", bin_, "--ro-bind", str(tmp_path / "elsewhere"), lib]
    assert "/usr" in SYSTEM_READ_ONLY and "/etc" in SYSTEM_READ_ONLY and "/" not in SYSTEM_READ_ONLY
