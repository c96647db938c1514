"""Smoke test of the benchmark suite: three benchmarks' `--quick` modes run to completion (no figures are checked;
targets are benchmark results, never test assertions). Results go to a temp dir, not bench/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["overhead", "emulator", "live"])
def test_quick_mode_runs(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.bench_{name}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert report["quick"] is True and report["rows"]
    assert all((tmp_path / Path(chart).name).exists() for chart in report["charts"])
