"""Smoke test of the abuse benchmark: `--quick --smoke` runs two of its attacks against the app started as a Space
runs it, and records a verdict for each of their rows. No figure or verdict is checked: what an attack got is a
benchmark result, never a test assertion. Results go to a temp dir, not bench/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_subset_runs_every_phase_of_two_attacks(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_abuse", "--quick", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "abuse.json").read_text())
    assert report["quick"] is True
    attacks = [row for row in report["rows"] if "↳" not in row["what"]]
    assert [row["what"].split(".")[0] for row in attacks] == ["1a", "9"]
    for row in attacks:  # each attack ran to its end and was judged against its target
        assert row["target"] and row["met"] in (True, False), row
    judged = [row["what"] for row in report["rows"] if row["met"] is not None]
    for key in ("1a", "9"):  # and the bystander and the server were judged around it
        assert f"{key} ↳ bystander's `1+1`" in judged and f"{key} ↳ server" in judged, judged
