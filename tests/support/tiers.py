"""Whether an isolation tier can be tested here, and the reason given when its cases are skipped."""

from __future__ import annotations

import os

from azure_sessions.emulator.tiers import tier_for_choice

SPACE_STAGE = "SESSIONS_PLAYGROUND_SPACE_STAGE"  # set by scripts/space-stage.sh

WHERE_LANDLOCK_RUNS = (
    "the Space stage (bash scripts/space-stage.sh, the last stage of scripts/run-tests.sh) runs the Landlock cases "
    "as uid 1000 from a copy of the checkout that uid can enter"
)


def tier_problem(tier: str) -> str | None:
    """None when ``tier`` ("bubblewrap" or "landlock") works here, else why not; for the Landlock tier run as root
    outside the Space stage, also where its cases run instead (a root emulator's per-worker uid cannot reach an
    environment below a directory closed to other users, such as one ``mktemp -d`` made)."""
    problem = tier_for_choice(tier).problem()
    if problem and tier == "landlock" and os.geteuid() == 0 and not os.environ.get(SPACE_STAGE):
        return f"{problem}; {WHERE_LANDLOCK_RUNS}"
    return problem
