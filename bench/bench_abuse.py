"""Abuse: what one hostile visitor can do to everyone else (issue 16), against the app as a Space runs it.

Each attack gets a fresh app (bench/space_app.py: `python app.py` as uid 1000 without user namespaces, so the
Landlock tier; canary secrets; bound to loopback like a Space's), a bystander tab that sends `1+1` in "No model" mode
before, during and after the attack, and the attacker's own tabs (bench/abuse_attacks.py). For each attack the table
says what the attacker got (against the attack's own target), what the bystander saw (during ≤ 2× before, every
message answered), whether the server survived, and whether the server's memory and disk came back within a margin
once the attacker's sessions ended. A failure or a dead server in one attack is recorded and the next one starts
with a new app. `--quick` scales the counts down; `--quick --smoke` runs two attacks (CI). `BENCH_APP_LOGS=dir`
keeps each app's log there (what its watchdog and sessions did), `BENCH_ABUSE_GRACE` how long closed tabs are
waited for.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import abuse_attacks as attacks
from bench.abuse_arena import Arena, Samples, mib, seconds
from bench.abuse_attacks import Outcome
from bench.common import BenchReport, Row, run_and_save
from bench.space_app import SPACE_UID, Footprint, SpaceApp, Stage, become_subreaper, is_root, remove_segments
from bench.space_app import sysv_segments as segments

PAGE_NEEDS = (("chat-input", "submit"), ("new-session", "click"))  # what every attack and the bystander use
LATENCY_RATIO = 2.0
LATENCY_SLACK = 0.25  # seconds added to the 2× allowance: a shared 2-core machine's noise, far below a stall
MARGINS = {"app_rss": 64 * 2**20, "workers": 1, "workers_pss": 64 * 2**20, "temp_bytes": 16 * 2**20, "temp_entries": 64,
           "sandbox_bytes": 16 * 2**20, "strays": 0, "sysv_shm_bytes": 0}  # fmt: skip
MARGIN_TEXT = (
    "app RSS ≤ +64 MiB; sandbox processes ≤ +1 and their PSS ≤ +64 MiB; no stray process; temp files ≤ +16 MiB "
    "and ≤ +64 entries; no SysV memory left"
)


@dataclass(frozen=True)
class Attack:
    key: str
    title: str  # {n} is replaced by the count of the run's mode
    counts: tuple[str, str]  # (full, quick)
    run: Callable[[Arena], Outcome]
    condition: str = "space"
    smoke: bool = False
    needs: tuple[tuple[str, str], ...] = ()  # (elem_id, event) the attack uses beyond the chat and New session

    def name(self, quick: bool) -> str:
        return f"{self.key}. " + self.title.format(n=self.counts[1 if quick else 0])


ATTACKS = [
    Attack("1a", "Calls on the server's and the template's pids (prlimit, setpriority, sched_*, ioprio)", ("", ""),
           attacks.other_pids, smoke=True),
    Attack("1b", "SysV shared memory ({n}) left after its session, read from another", ("256 MiB", "64 MiB"),
           attacks.sysv_shm),
    Attack("2a", "{n} sleeping processes in one session", ("300", "300"), attacks.sleeping_processes),
    Attack("2b", "A fork bomb ({n})", ("8 s, then its processes stay 25 s", "5 s, then 12 s"), attacks.fork_bomb),
    Attack("3a", "Three processes of one session holding {n} each", ("2 GiB", "1.5 GiB"), attacks.memory_holders),
    Attack("3b", "Private tmpfs /tmp and /dev/shm filled in {n} sessions (bubblewrap tier, as root)", ("3", "2"),
           attacks.tmpfs_fill, condition="root"),
    Attack("4", "{n} tabs of one client, each sending a message", ("200", "30"), attacks.many_tabs),
    Attack("5", "Sixteen tabs of one client running time.sleep({n})", ("40", "8"), attacks.sleeping_runs),
    Attack("6a", "Output flood: three cells making {n} of output each (stdout, stderr, value)", ("30 MiB", "8 MiB"),
           attacks.output_flood),
    Attack("6b", "A large image ({n} pixels of noise)", ("4000×4000", "1500×1500"), attacks.large_image),
    Attack("6c", "A {n} sparse file selected twice; four 24 MiB sparse files offered", ("1 GiB", "256 MiB"),
           attacks.sparse_files, needs=(("file-list", "select"), ("refresh-btn", "click"))),
    Attack("6d", "A 10 MiB chat message", ("", ""), attacks.huge_message),
    Attack("6e", "{n} page loads (Gradio sessions) that never send a message", ("2000", "100"), attacks.idle_sessions),
    Attack("6f", "{n} tiny files written by a cell and offered", ("2000", "300"), attacks.tiny_files),
    Attack("7a", "Preview of a one-line CSV with {n} columns", ("30,000", "10,000"), attacks.wide_csv,
           needs=(("file-list", "select"), ("refresh-btn", "click"))),
    Attack("7b", "Zip export of /mnt/data holding two sparse files of {n}", ("1 GiB", "256 MiB"), attacks.sparse_zip,
           needs=(("export-zip", "click"),)),
    Attack("8", "Anonymous uploads to /gradio_api/upload (three of {n}), one aborted", ("50 MB", "10 MB"),
           attacks.anonymous_uploads),
    Attack("9", "A request reusing another visitor's Gradio session hash, without their browser key", ("", ""),
           attacks.borrowed_session_hash, smoke=True, needs=(("refresh-btn", "click"),)),
]  # fmt: skip


@dataclass
class Timing:
    """The run's time allowances, by mode."""

    probes: int
    probe_timeout: float
    settle: float  # after New session in the attacker's tabs
    grace: float  # after the attacker's tabs closed
    tab_grace: float  # the app's PLAYGROUND_TAB_GRACE_SECONDS: its default (120 s) would make each such wait minutes
    recovery: float  # how long a server that stopped answering is watched for its return

    @classmethod
    def of(cls, quick: bool) -> Timing:
        if quick:
            return cls(probes=2, probe_timeout=30, settle=3, grace=float(os.environ.get("BENCH_ABUSE_GRACE", 10)),
                       tab_grace=5, recovery=5)  # fmt: skip
        return cls(probes=5, probe_timeout=60, settle=6, grace=float(os.environ.get("BENCH_ABUSE_GRACE", 45)),
                   tab_grace=20, recovery=10)  # fmt: skip


@dataclass
class Result:
    """Everything measured around one attack."""

    attack: Attack
    outcome: Outcome | None = None
    error: str = ""
    tier: str = ""
    note: str = ""
    phases: dict[str, Samples] = field(default_factory=dict)
    before: Footprint | None = None
    after: Footprint | None = None
    server: str = "up"
    server_ok: bool = True
    waited: float = 0.0
    seconds: float = 0.0
    clock: list[tuple[str, float]] = field(default_factory=list)  # how long each phase took

    def lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.clock.append((phase, now - since))
        return now


def missing(config: dict, needs: tuple[tuple[str, str], ...]) -> list[str]:
    """The (elem_id, event) pairs the page does not wire, as "elem_id.event"."""
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config.get("components", [])}
    wired = {(ids.get(target), name) for event in config.get("dependencies", []) for target, name in event["targets"]}
    return [f"{elem}.{event}" for elem, event in needs if (elem, event) not in wired]


def excess(before: Footprint, now: Footprint) -> list[str]:
    """The figures of `now` beyond `before` plus their margin."""
    return [name for name, margin in MARGINS.items() if getattr(now, name) - getattr(before, name) > margin]


def run_attack(stage: Stage, attack: Attack, quick: bool, timing: Timing) -> Result:
    result = Result(attack)
    started = mark = time.perf_counter()
    try:
        app = SpaceApp(stage, attack.condition, extra_env={"PLAYGROUND_TAB_GRACE_SECONDS": f"{timing.tab_grace:g}"})
    except Exception as exc:
        result.error = f"the app did not start: {exc}"[:300]
        result.seconds = time.perf_counter() - started
        return result
    result.tier, result.note = app.tier, app.note
    mark = result.lap("start", mark)
    kept_segments = {shmid for shmid, _, _ in segments()}
    arena = None
    try:
        absent = missing(app.config(), PAGE_NEEDS + attack.needs)
        if absent:
            result.outcome = attacks.skip(f"the page has no {', '.join(absent)}")
            return result
        arena = Arena(app, quick, timing.probes, timing.probe_timeout)
        result.phases = arena.phases
        _settle_pool(app)
        arena.probe("before", max(3, timing.probes))  # the baseline, from at least three
        result.before = app.footprint()
        arena.peak = app.footprint()
        mark = result.lap("before", mark)
        try:
            result.outcome = attack.run(arena)
        except Exception as exc:  # the attack's driver broke (often: the server went away under it)
            result.error = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
        mark = result.lap("attack", mark)
        if result.outcome is not None and result.outcome.skipped:
            return result
        _check_server(app, result, timing)
        how = result.outcome.end if result.outcome else "new-session"
        if result.server_ok:
            arena.end_attackers(how)
            mark = result.lap("end", mark)
            limit = timing.grace if how == "close" else timing.settle
            result.after, result.waited = _settle(app, result.before, limit)
            mark = result.lap("settle", mark)
            arena.probe("after")
            _check_server(app, result, timing)
        mark = result.lap("after", mark)
    except Exception as exc:
        result.error = result.error or f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc()
    finally:
        if arena is not None:
            arena.close()
        app.close()
        remove_segments(app.uid, kept_segments)  # what the attack left in the host's IPC namespace
        result.lap("close", mark)
        result.seconds = time.perf_counter() - started
    return result


def _settle_pool(app: SpaceApp, timeout: float = 5.0) -> None:
    """Wait until the warm pool has refilled (the sandbox count is steady), so "before" is a resting state."""
    deadline, last, steady = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and steady < 2:
        count = app.footprint().workers
        steady = steady + 1 if count == last else 0
        last = count
        time.sleep(0.25)


def _settle(app: SpaceApp, before: Footprint, limit: float) -> tuple[Footprint, float]:
    """The footprint once it is back within the margins, or after `limit` seconds; and the seconds waited."""
    start = time.monotonic()
    while True:
        now = app.footprint()
        waited = time.monotonic() - start
        if not excess(before, now) or waited >= limit:
            return now, waited
        time.sleep(0.5)


def _check_server(app: SpaceApp, result: Result, timing: Timing) -> None:
    if not result.server_ok or app.alive():
        return
    down_at = time.monotonic()
    reason = app.down_reason()
    while time.monotonic() - down_at < timing.recovery and app.running():
        if app.alive():
            result.server = f"{reason} (stalled), answered again after {time.monotonic() - down_at:.1f} s"
            return
        time.sleep(0.5)
    result.server = f"{reason}; not back within {timing.recovery:.0f} s"
    if not app.running():
        status, last = app.proc.poll(), app.last_error()
        result.server += " (the app's process ended" + (f", status {status}" if status is not None else "")
        result.server += (f": {last}" if last else "") + ")"
    result.server_ok = False


# ---------------------------------------------------------------------------------------------------- the table
def rows_of(result: Result, quick: bool, timing: Timing) -> list[Row]:
    attack, outcome = result.attack, result.outcome
    name = attack.name(quick)
    where = result.tier + (f"; {result.note}" if result.note else "")
    sub = f"{attack.key} ↳ "  # the attack's other rows, named after it (the summary lists missed rows by name)
    if outcome is not None and outcome.skipped:
        return [Row(name, where or attack.condition, f"skipped: {outcome.skipped}")]
    if outcome is None:
        return [Row(name, where, f"did not run to its end: {result.error or 'no result'}", target="runs", met=False)]
    got = outcome.got + (f" (the attack's driver then failed: {result.error})" if result.error else "")
    rows = [Row(name, f"what the attacker got ({where})", got, target=outcome.target, met=outcome.contained)]
    rows += outcome.rows
    rows.append(_bystander_row(result))
    rows.append(Row("server", "answers after the attack", result.server, target="survives", met=result.server_ok))
    rows.append(_resources_row(result, timing))
    for row in rows[1:]:
        row.what = sub + row.what
    return rows


def _bystander_row(result: Result) -> Row:
    before, during, after = (result.phases.get(p, Samples()) for p in ("before", "during", "after"))
    base = before.median
    text = " · ".join(s.describe() for s in (before, during, after))
    if base is None:
        return Row("bystander's `1+1`", "before · during · after", text, target="answered", met=False)
    allowed = LATENCY_RATIO * base + LATENCY_SLACK
    ok = all(s.replies and not s.failed and (s.median or 0) <= allowed for s in (during, after))
    ratio = f"during {during.median / base:.1f}× before" if during.median and base else ""
    return Row(
        "bystander's `1+1`",
        f"before · during · after ({len(before.replies)}/{len(during.replies)}/{len(after.replies)} messages)",
        text,
        seconds(during.worst) if during.worst is not None else "",
        ratio,
        f"during and after ≤ {LATENCY_RATIO:g}× before (+{LATENCY_SLACK:g} s), all answered",
        ok,
    )


def _resources_row(result: Result, timing: Timing) -> Row:
    before, after = result.before, result.after
    how = result.outcome.end if result.outcome else "new-session"
    when = (
        f"tabs closed, then up to {timing.grace:.0f} s"
        if how == "close"
        else f"New session in its tabs, then up to {timing.settle:.0f} s"
    )
    if before is None or after is None:
        return Row("memory and disk after its sessions ended", when, "not measured (the server was down)",
                   target=MARGIN_TEXT, met=False)  # fmt: skip
    parts = [
        f"app RSS {mib(before.app_rss)}→{mib(after.app_rss)}",
        f"sandboxes {before.workers}→{after.workers} procs, PSS {mib(before.workers_pss)}→{mib(after.workers_pss)}",
        f"temp files {mib(before.temp_bytes)}→{mib(after.temp_bytes)} ({before.temp_entries}→{after.temp_entries} "
        f"entries, {before.cache_entries}→{after.cache_entries} in Gradio's cache)",
    ]
    if after.strays or before.strays:
        parts.append(f"strays {before.strays}→{after.strays}")
    if abs(after.sandbox_bytes - before.sandbox_bytes) > 2**20:
        parts.append(f"sandboxes' disk {mib(before.sandbox_bytes)}→{mib(after.sandbox_bytes)}")
    if after.sysv_shm_bytes or before.sysv_shm_bytes:
        parts.append(f"SysV shm {mib(before.sysv_shm_bytes)}→{mib(after.sysv_shm_bytes)}")
    over = excess(before, after)
    text = "; ".join(parts) + (f" (after {result.waited:.0f} s)" if over else f" (back after {result.waited:.1f} s)")
    return Row("memory and disk after its sessions ended", f"before → after ({when})", text, target=MARGIN_TEXT,
               met=not over)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- the run
def body(quick: bool, smoke: bool = False, only: list[str] | None = None) -> BenchReport:
    timing = Timing.of(quick)
    chosen = [a for a in ATTACKS if (a.smoke or not smoke) and (not only or a.key in only)]
    report = BenchReport("abuse", "8. Abuse: one hostile visitor against everyone else")
    subreaper = become_subreaper()
    stage = Stage()
    results = []
    try:
        for attack in chosen:
            print(f"--- {attack.name(quick)}", flush=True)
            result = run_attack(stage, attack, quick, timing)
            results.append(result)
            for row in rows_of(result, quick, timing):
                report.rows.append(row)
                verdict = "" if row.met is None else (" [met]" if row.met else " [MISSED]")
                print(f"    {row.what.strip()}: {row.median}{verdict}", flush=True)
            laps = ", ".join(f"{phase} {spent:.1f}" for phase, spent in result.clock)
            print(f"    ({result.seconds:.0f} s: {laps})", flush=True)
    finally:
        stage.close()
    report.notes += notes(results, quick, timing, subreaper)
    return report


def notes(results: list[Result], quick: bool, timing: Timing, subreaper: bool) -> list[str]:
    tiers = sorted({r.tier for r in results if r.tier})
    conditions = (
        f"as uid {SPACE_UID} with no user namespaces (setpriv + bwrap --disable-userns), as scripts/space-stage.sh "
        "does; 3b as root, in the bubblewrap tier"
        if is_root()
        else f"as this user (uid {os.getuid()}): not root, so not under a Space's uid and namespace conditions"
    )
    lines = [
        "Each attack starts a new app: `python app.py` from a copy of the checkout with SPACE_ID, canary secrets, "
        f"GRADIO_SERVER_NAME=127.0.0.1 and its temp files in a directory of its own, {conditions}; sandbox tiers "
        f"seen: {', '.join(tiers) or 'none'}. Default settings (4 warm sandboxes, 16 run slots, pool of 100), but for a "
        f"closed tab's grace of {timing.tab_grace:g} s (PLAYGROUND_TAB_GRACE_SECONDS; 120 s by default).",
        "Every tab sends the client address a Space's proxy reports (X-Forwarded-For, trusted from loopback): the "
        "attacker's tabs share one, the bystander and every new visitor have their own. The bystander's latency "
        f'is its `1+1` in "No model" mode, send → answer over Gradio\'s own protocol ({timing.probes} messages a '
        "phase, median; a message with no answer within "
        f"{timing.probe_timeout:.0f} s counts as failed).",
        "Memory: the app's process (RSS), the sandbox template (RSS) and the workers forked from it (count and PSS: "
        "what they add to the machine); disk: the app's per-visitor directories and Gradio's cache (allocated "
        "bytes, entries). The attacker's sessions end with New session in each tab (the old session is deleted at "
        f"once), or for 4 and 6e by closing the tabs and waiting up to {timing.grace:.0f} s (BENCH_ABUSE_GRACE) for "
        "a tab that is gone to give its sandbox back (its grace, then the next round of the app's reaper).",
        "Targets are the issue's: the attack contained (a refusal or a bound, whatever its form), the bystander at "
        "most 2× slower, the server alive, memory and disk back within the margins once the attacker's sessions "
        "end. Whatever an attack leaves behind (processes, SysV segments) is removed before the next one starts"
        + ("" if subreaper else " (no child subreaper here: stray processes may be missed)")
        + ".",
        f"Whole run: {sum(r.seconds for r in results):.0f} s for {len(results)} attacks"
        + (" (quick: counts scaled down)" if quick else "")
        + ".",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="counts scaled down (a smoke run, about 3 minutes)")
    parser.add_argument("--smoke", action="store_true", help="with --quick: only two attacks (CI)")
    parser.add_argument("attacks", nargs="*", help=f"run only these ({', '.join(a.key for a in ATTACKS)})")
    args = parser.parse_args()
    if args.smoke and not args.quick:
        parser.error("--smoke goes with --quick")
    unknown = sorted(set(args.attacks) - {a.key for a in ATTACKS})
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # end the app and remove the stage on the way out
    run_and_save("abuse", lambda quick: body(quick, args.smoke, args.attacks), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
