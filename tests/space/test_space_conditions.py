"""Under a Hugging Face Space's conditions (the stage scripts/space-stage.sh runs as uid 1000 where no user
namespace can be created, with the Space's secrets in the environment): bubblewrap cannot start, the emulator takes
the Landlock tier by itself, a plot works, and no secret of the server is within the sandbox's reach."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from azure_sessions import SessionsClient
from azure_sessions.emulator.tiers import BubblewrapTier, LandlockTier

STAGE = os.environ.get("SESSIONS_PLAYGROUND_SPACE_STAGE") == "1"
CANARIES = ("HF_TOKEN", "AZURE_CLIENT_SECRET", "OPENAI_API_KEY")

pytestmark = pytest.mark.skipif(not STAGE, reason="runs in the Space-conditions stage (scripts/space-stage.sh)")


def test_the_stage_has_a_spaces_conditions() -> None:
    assert os.getuid() != 0 and os.geteuid() != 0
    assert "Creating new namespace failed" in (BubblewrapTier.problem() or "")
    assert LandlockTier.problem() is None
    assert all(os.environ.get(name) for name in CANARIES)
    # the environment was built from a bare interpreter: nothing of the sandbox's can come from outside it
    bare = subprocess.run([sys._base_executable, "-I", "-c", "import IPython"], capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'IPython'" in bare.stderr


def test_the_emulator_takes_the_landlock_tier_and_a_plot_works(emulator, emulator_token) -> None:
    from PIL import Image

    assert emulator.sandbox_mode == "landlock" and emulator.isolated and emulator.isolation_warning is None
    with SessionsClient(emulator.endpoint, credential=emulator_token) as client:
        result = client.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('space')\nplt.show()")
        assert result.succeeded, result.stderr
        assert len(result.images) == 1 and result.images[0].format == "png"
        image = Image.open(io.BytesIO(result.images[0].data))
        assert image.format == "PNG" and image.size[0] > 100


def test_the_spaces_secrets_are_beyond_the_sandboxs_reach(emulator, emulator_token) -> None:
    secrets = [os.environ[name] for name in CANARIES]
    code = f"""
import glob, os
found = []
for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline') + ['/proc/{os.getpid()}/environ',
                                                                         '/proc/{os.getppid()}/environ']:
    try:
        found.append(open(path, 'rb').read().decode('latin-1'))
    except OSError:
        pass
'\\n'.join(found) + repr(dict(os.environ))
"""
    with SessionsClient(emulator.endpoint, credential=emulator_token) as client:
        result = client.execute(code)
        grep = client.execute("!grep -rIls space-stage-canary /proc/*/environ /var/tmp /home 2>/dev/null; echo done")
    assert result.succeeded, result.stderr
    for secret in secrets:
        assert secret not in str(result.result) + result.stdout + grep.stdout
    assert grep.stdout == "done\n"
