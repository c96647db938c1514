"""Shared pieces of the benchmarks: timing statistics, result rows, machine facts, and the JSON each script writes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_QUICK = "--quick" in sys.argv[1:]
RESULTS_DIR = Path(
    os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results" / ("quick" if _QUICK else "")
).resolve()
"""Where results and charts go. Quick smoke runs use bench/results/quick/ (ignored by git), so they never
overwrite the full run's committed figures; BENCH_RESULTS_DIR overrides both."""


@dataclass(frozen=True)
class Stats:
    """Median and p95 of a sample, in the unit the caller measured."""

    median: float
    p95: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        data = sorted(values)
        if not data:
            raise ValueError("no samples")
        index = max(0, min(len(data) - 1, round(0.95 * (len(data) - 1))))
        return cls(median=statistics.median(data), p95=data[index], n=len(data))


@dataclass
class Row:
    """One line of a benchmark table in BENCHMARKS.md."""

    what: str
    how: str
    median: str
    p95: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class BenchReport:
    """What one benchmark script measured: rows for the table, chart files, and free-text notes."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> BenchReport:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["rows"] = [Row(**row) for row in data["rows"]]
        return cls(**data)


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 3) -> list[float]:
    """Run `fn` `warmup` times untimed, then `repeat` times; return each call's wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def machine() -> str:
    """One line naming the machine that produced the figures."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def cli(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (few repetitions)")
    return parser.parse_args()


def run_and_save(name: str, body: Callable[[bool], BenchReport], quick: bool) -> BenchReport:
    """Time a benchmark body, save its JSON under bench/results/ and print its table."""
    start = time.perf_counter()
    report = body(quick)
    report.quick = quick
    report.seconds = time.perf_counter() - start
    report.write()
    print(f"## {report.title} ({report.seconds:.1f} s{', quick' if quick else ''})")
    for row in report.rows:
        verdict = "" if row.met is None else ("met" if row.met else "MISSED")
        print(f"- {row.what}: median {row.median} p95 {row.p95} ratio {row.ratio} target {row.target} {verdict}")
    for note in report.notes:
        print(f"  note: {note}")
    return report


def interleaved(calls: dict[str, Callable[[], object]], repeat: int, warmup: int = 3) -> dict[str, list[float]]:
    """Time several alternatives round-robin (A B A B ..., the order rotating each round) so drifting machine load
    hits them all alike. Returns each alternative's wall times in milliseconds."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeat):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return samples


def pct(fraction: float) -> str:
    """0.034 -> "+3.4 %"."""
    return f"{fraction * 100:+.1f} %"


def times(value: float) -> str:
    return f"{value:.2f}×"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_path(name: str) -> tuple[Path, str]:
    """Where a chart goes, and the relative link BENCHMARKS.md uses for it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{name}.png", f"bench/results/{name}.png"


def latency_chart(name: str, title: str, series: dict[str, list[float]], unit: str = "ms") -> str:
    """Cumulative distributions (log x) of several latency samples; returns the relative link."""
    plt = _pyplot()
    path, link = chart_path(name)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for label, values in series.items():
        data = sorted(values)
        if not data:
            continue
        ys = [(i + 1) / len(data) for i in range(len(data))]
        ax.step(data, ys, where="post", label=f"{label} (median {statistics.median(data):.3g} {unit})")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"latency ({unit}, log scale)")
    ax.set_ylabel("fraction of calls")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return link


def bar_chart(
    name: str,
    title: str,
    bars: dict[str, float],
    ylabel: str,
    errors: dict[str, float] | None = None,
    target: float | None = None,
    baseline: Callable[[str], bool] | None = None,
) -> str:
    """A bar per label (optionally with an error bar and a dashed target line; `baseline(label)` True draws that bar
    grey, for the alternative we compare against); returns the relative link."""
    plt = _pyplot()
    path, link = chart_path(name)
    labels = list(bars)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.05 * len(labels) + 1.5), 3.8), dpi=110)
    values = [bars[label] for label in labels]
    yerr = [errors.get(label, 0.0) for label in labels] if errors else None
    colors = ["#9d9d9d" if baseline and baseline(label) else "#4c78a8" for label in labels]
    ax.bar(labels, values, yerr=yerr, color=colors, capsize=4)
    for index, value in enumerate(values):
        ax.annotate(
            f"{value:.0f}" if value >= 100 else f"{value:.3g}", (index, value), ha="center", va="bottom", fontsize=8
        )
    if target is not None:
        ax.axhline(target, color="#e45756", linestyle="--", label=f"target {target:.3g}")
        ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return link
