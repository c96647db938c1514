"""The app under load, in headless Chromium (system /usr/bin/chromium, driven by Playwright).

The app runs as shipped for local use (`build_app` with the embedded emulator, default settings) in its own process
(bench/app_support.py), with a scripted model added to the picker that streams each reply in a few chunks (0.1 s
apart, a stand-in for a real model's streaming; no inference). Every timing is taken inside the page: a capture-phase
`keydown` listener stamps the Enter press and a MutationObserver on the chat stamps the first pending step (a step
with its spinner) and the final answer, so the Playwright driver's own polling adds nothing. The app process stamps
when its handler starts and yields its first update, which splits Enter → pending step into its three legs.

- Enter → first pending step visible: messages on fresh and on used tabs, and under load;
- a single user's 3-step task on a fresh tab (new sandbox session), the pool refilled before each;
- 10 browser contexts (fresh tabs) submitting the same 3-step task at once: p95 completion versus the single user's
  median, the failed runs, and the CPU each part of the system used; then (full mode) the same load with as many
  pre-started sandbox workers as users, as a diagnostic.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.app_support import (
    TARGET_LOAD_RATIO,
    TARGET_PENDING_MS,
    AppProcess,
    cpu_by_group,
    cpu_snapshot,
    finish,
    open_tab,
    submit,
)
from bench.common import BenchReport, Row, Stats, bar_chart, cli, latency_chart, ms, run_and_save, times
from playground.settings import Settings
from tests.support.harness import chromium_launch_options


def single_user(browser: Any, app: AppProcess, tag: str, messages: int) -> list[dict]:
    """One user alone: a fresh tab (after the pool refilled), then `messages` tasks in a row. The first result also
    carries the CPU seconds its run cost, by group."""
    app.wait_pool()
    context, page = open_tab(browser, app.url)
    results = []
    for message in range(messages):
        before = cpu_snapshot()
        text = submit(page, f"{tag}m{message}")
        results.append(finish(page) | {"text": text, "cpu": cpu_by_group(before, cpu_snapshot(), app.proc.pid)})
    context.close()
    return with_split(results, app.stamps())


def load_round(browser: Any, app: AppProcess, users: int, tag: str) -> tuple[list[dict], dict[str, float], float]:
    """`users` fresh tabs submit at once; returns their results, CPU seconds by group and the round's wall time."""
    app.wait_pool()
    opened = [open_tab(browser, app.url) for _ in range(users)]
    before = cpu_snapshot()
    start = time.perf_counter()
    texts = [submit(page, f"{tag}u{index}") for index, (_, page) in enumerate(opened)]
    results = [finish(page) | {"text": text} for text, (_, page) in zip(texts, opened, strict=True)]
    wall = time.perf_counter() - start
    cpu = cpu_by_group(before, cpu_snapshot(), app.proc.pid)
    for context, _ in opened:
        context.close()
    return with_split(results, app.stamps()), cpu, wall


def with_split(results: list[dict], stamps: dict[str, list[float]]) -> list[dict]:
    """Split each Enter -> pending step into browser -> handler, handler -> first update, first update -> screen
    (ms; wall clocks of the browser and the app process, same machine)."""
    for result in results:
        stamp = stamps.get(result["text"])
        if stamp and not result["failed"]:
            entry, first = stamp
            result["split"] = [
                (entry - result["enter_epoch"]) * 1000,
                (first - entry) * 1000,
                (result["pending_epoch"] - first) * 1000,
            ]
    return results


FRESH_TAB, SAME_TAB = "first message on a fresh tab", "later message, same tab"


@dataclass
class Measured:
    """Everything one benchmark run measured; `load_key` names the under-load series of `pending` and `splits`."""

    users: int
    rounds: int
    load_key: str
    pending: dict[str, list[float]]  # Enter -> first pending step (ms), by series
    splits: dict[str, list] = field(default_factory=dict)  # the three legs of each Enter -> pending step, by series
    single: list[float] = field(default_factory=list)  # a single user's task (ms)
    single_cpu: list[dict[str, float]] = field(default_factory=list)  # CPU seconds of a single user's task, by group
    loaded: list[float] = field(default_factory=list)  # tasks under load (ms)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the load rounds, by group
    wall: float = 0.0  # wall seconds of the load rounds
    everything: list[dict] = field(default_factory=list)  # every result, failed or not
    diagnostic: list[dict] = field(default_factory=list)  # the load again with a worker pre-started per user
    sandbox: str = ""


def measure(quick: bool) -> Measured:
    from playwright.sync_api import sync_playwright

    tabs, per_tab = (1, 2) if quick else (3, 3)
    users, rounds = (2, 1) if quick else (10, 2)
    load_key = f"under load ({users} users at once)"
    m = Measured(users, rounds, load_key, {FRESH_TAB: [], SAME_TAB: [], load_key: []})
    app = AppProcess()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(**chromium_launch_options())
            open_tab(browser, app.url)[0].close()  # the first page load warms the server's caches
            for round_index in range(rounds):
                for tab in range(tabs):
                    add_single_user(m, single_user(browser, app, f"r{round_index}t{tab}", per_tab))
                add_load_round(m, *load_round(browser, app, users, f"r{round_index}"))
            app.close()
            if not quick:  # diagnostic: the same load with as many pre-started workers as users
                app = AppProcess(prestart=users)
                open_tab(browser, app.url)[0].close()
                m.diagnostic, _, _ = load_round(browser, app, users, "diag")
            browser.close()
    finally:
        app.close()
    m.sandbox = app.sandbox
    return m


def add_single_user(m: Measured, results: list[dict]) -> None:
    m.everything += results
    for index, result in enumerate(results):
        if not result["failed"]:
            m.pending[FRESH_TAB if index == 0 else SAME_TAB].append(result["pending"])
            m.splits.setdefault("one user", []).append(result.get("split"))
    if not results[0]["failed"]:
        m.single.append(results[0]["done"])
        m.single_cpu.append(results[0]["cpu"])


def add_load_round(m: Measured, results: list[dict], cpu: dict[str, float], wall: float) -> None:
    m.everything += results
    m.wall += wall
    for group, seconds in cpu.items():
        m.cpu[group] = m.cpu.get(group, 0.0) + seconds
    m.loaded += [r["done"] for r in results if not r["failed"]]
    m.pending[m.load_key] += [r["pending"] for r in results if not r["failed"]]
    m.splits.setdefault(m.load_key, []).extend(r.get("split") for r in results)


def body(quick: bool) -> BenchReport:
    m = measure(quick)
    report = BenchReport("app", "6. The app under load")
    report.rows += pending_rows(m)
    report.rows += task_rows(m)
    report.notes += notes(m)
    report.charts += charts(m)
    return report


def pending_rows(m: Measured) -> list[Row]:
    """Enter -> first pending step by series, then the three legs of it."""
    rows = []
    for key, values in m.pending.items():
        if not values:
            continue
        s = Stats.of(values)
        alone = key != m.load_key
        rows.append(
            Row(
                f"Enter → first pending step visible, {key}",
                f"{len(values)} messages",
                ms(s.median),
                ms(s.p95),
                "",
                "p50 ≤ 500 ms" if alone else "",
                s.median <= TARGET_PENDING_MS if alone else None,
            ),
        )
    for key, values in m.splits.items():
        parts = [v for v in values if v]
        if not parts:
            continue
        medians = [statistics.median(v[i] for v in parts) for i in range(3)]
        p95s = [Stats.of(v[i] for v in parts).p95 for i in range(3)]
        rows.append(
            Row(
                f"  ↳ split, {key}: Enter → handler · handler → first update · update → on screen",
                f"{len(parts)} messages; browser and app wall clocks",
                " · ".join(ms(v) for v in medians),
                " · ".join(ms(v) for v in p95s),
            )
        )
    return rows


def task_rows(m: Measured) -> list[Row]:
    """The 3-step task alone, under load, under load with pre-started workers; the failed runs."""
    users, s_single = m.users, Stats.of(m.single)
    rows = [
        Row(
            "3-step task, single user (fresh tab)",
            f"{len(m.single)} runs, pool refilled before each",
            ms(s_single.median),
            ms(s_single.p95),
            "1× (baseline)",
        ),
    ]
    if m.loaded:
        s_loaded = Stats.of(m.loaded)
        ratio = s_loaded.p95 / s_single.median
        rows.append(
            Row(
                f"3-step task, {users} users at once (fresh tabs)",
                f"{m.rounds} round(s), {len(m.loaded)} runs",
                ms(s_loaded.median),
                ms(s_loaded.p95),
                times(ratio) + " (p95 vs single median)",
                "≤ 2×",
                ratio <= TARGET_LOAD_RATIO,
            ),
        )
    ok_diag = [r for r in m.diagnostic if not r["failed"]]
    if ok_diag:
        s_diag = Stats.of(r["done"] for r in ok_diag)
        s_diag_pending = Stats.of(r["pending"] for r in ok_diag)
        rows.append(
            Row(
                f"diagnostic: {users} users at once, {users} pre-started workers",
                "1 round; PLAYGROUND_WARM_SANDBOXES raised "
                f"in the app process only; Enter → pending p50 {ms(s_diag_pending.median)}",
                ms(s_diag.median),
                ms(s_diag.p95),
                times(s_diag.p95 / s_single.median) + " (p95 vs single median)",
            ),
        )
    failures = sum(bool(r["failed"]) for r in m.everything)
    rows.append(
        Row(
            "failed runs",
            "no final answer in 120 s, or a failed step",
            str(failures + sum(r["failed"] for r in m.diagnostic)),
            "",
            f"of {len(m.everything) + len(m.diagnostic)} runs",
            "0",
            failures == 0 and not any(r["failed"] for r in m.diagnostic),
        ),
    )
    return rows


def notes(m: Measured) -> list[str]:
    """The set-up, where the CPU went, and the CPU floor a single user's task sets for the load."""
    users, wall, cpu, single_cpu, s_single = m.users, m.wall, m.cpu, m.single_cpu, Stats.of(m.single)
    total_cpu = sum(cpu.values()) or 1.0
    per_task = (
        {group: statistics.median(c[group] for c in single_cpu) for group in single_cpu[0]} if single_cpu else {}
    )
    floor = users * sum(per_task.values()) / 2 * 1000  # ms: the single-user work of every user, on 2 cores
    server_floor = users * sum(v for k, v in per_task.items() if k != "browser") / 2 * 1000
    lines = [
        f"Sandbox: {m.sandbox}; the embedded emulator keeps the default {Settings().warm_sandboxes} pre-started "
        f"workers (PLAYGROUND_WARM_SANDBOXES); at {users} users at once the others get a worker forked from the "
        "sandbox template on the spot (tens of milliseconds, see section 3). The scripted model streams each "
        "step's reply in ~5 chunks 0.1 s apart (≈0.5 s per step, ≈1.5 s per task): only the app's own work is "
        "measured, not a model's.",
        f"CPU during the {users}-user rounds ({wall:.1f} s wall, {2 * wall:.0f} core-seconds available on 2 cores): "
        + ", ".join(f"{group} {seconds:.1f} s ({seconds / total_cpu:.0%})" for group, seconds in cpu.items())
        + ". All tabs run in one headless Chromium on the same 2 cores as the app, which a real deployment does not.",
        "CPU of one user's task alone (median, fresh tab): "
        + ", ".join(f"{group} {seconds:.2f} s" for group, seconds in per_task.items())
        + f". {users} such tasks need {2 * floor / 1000:.1f} core-seconds: {floor / 1000:.1f} s on 2 cores even with "
        f"perfect sharing, i.e. {floor / s_single.median:.1f}× a single user's run before any cold start; without "
        f"the browser (which runs on the users' machines in a deployment) {server_floor / s_single.median:.1f}×.",
    ]
    if m.loaded and Stats.of(m.loaded).p95 / s_single.median > TARGET_LOAD_RATIO:
        lines.append(
            f"Why the target is missed here: the {users} headless browsers share the app's 2 cores and use most of "
            "the CPU (above); without them the same load is within the target (section 7, the same task driven "
            "over Gradio's own protocol). In a deployment each browser runs on its user's machine."
        )
    return lines


def charts(m: Measured) -> list:
    users, loaded, s_single = m.users, m.loaded, Stats.of(m.single)
    ok_diag = [r for r in m.diagnostic if not r["failed"]]
    return [
        latency_chart("app_pending", "Enter → first pending step", m.pending),
        bar_chart(
            "app_load",
            "3-step task completion (s)",
            {
                "single user\nmedian": s_single.median / 1000,
                "single user\np95": s_single.p95 / 1000,
                f"{users} users\nmedian": statistics.median(loaded) / 1000 if loaded else 0.0,
                f"{users} users\np95": Stats.of(loaded).p95 / 1000 if loaded else 0.0,
                **(
                    {f"{users} users, {users} prestarted\np95": Stats.of(r["done"] for r in ok_diag).p95 / 1000}
                    if ok_diag
                    else {}
                ),
            },
            "seconds",
            target=TARGET_LOAD_RATIO * s_single.median / 1000,
        ),
    ]


if __name__ == "__main__":
    args = cli(__doc__ or "")
    run_and_save("app", body, args.quick)
