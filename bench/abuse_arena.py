"""Where one attack of the abuse benchmark runs: a fresh app (bench/space_app.py), a bystander tab that sends `1+1`
in "No model" mode before, during and after the attack, the attacker's tabs, and the app's footprint.

Every tab carries the client address a Space's proxy would report (`X-Forwarded-For`, which the app's server trusts
from loopback): the attacker's tabs share one address, the bystander and each fresh visitor have their own.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.space_app import Footprint, SpaceApp
from bench.tab import Reply, Tab

T = TypeVar("T")
ATTACKER_ADDRESS = "203.0.113.66"
BYSTANDER_ADDRESS = "198.51.100.10"
PROBE = "1+1"
MARK = "ABUSE-RESULT"
_MARKED = re.compile(rf"{MARK} (\{{.*\}})")


def answered_two(reply: Reply) -> bool:
    """The bystander's `1+1` came back as 2."""
    return reply.ok and "\n2\n" in reply.answer


def marked(reply: Reply) -> dict[str, Any] | None:
    """The JSON an attack's cell printed after the marker, if the chat shows it."""
    found = _MARKED.search(reply.answer)
    if not found:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(found.group(1))
    return None


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB" if abs(value) < 10 * 2**30 else f"{value / 2**30:.1f} GiB"


@dataclass
class Samples:
    """The bystander's `1+1` messages of one phase."""

    replies: list[Reply] = field(default_factory=list)

    @property
    def failed(self) -> list[Reply]:
        return [r for r in self.replies if not answered_two(r)]

    @property
    def median(self) -> float | None:
        good = [r.seconds for r in self.replies if answered_two(r)]
        return statistics.median(good) if good else None

    @property
    def worst(self) -> float | None:
        return max((r.seconds for r in self.replies), default=None)

    def describe(self) -> str:
        if not self.replies:
            return "not measured"
        if not self.failed:
            text = seconds(self.median or 0.0)
            if len(self.replies) > 1 and (self.worst or 0) > 1.5 * (self.median or 0) and (self.worst or 0) > 0.2:
                text += f" (worst {seconds(self.worst or 0)})"
            return text
        failed = self.failed
        why = failed[0].error or ("no answer" if not failed[0].answer else f"answered {failed[0].answer[:60]!r}")
        return f"{len(failed)} of {len(self.replies)} failed ({why[:120]})"


class Arena:
    """One attack's world: a fresh app, its bystander, the attacker's tabs and the measurements."""

    def __init__(self, app: SpaceApp, quick: bool, probes: int, probe_timeout: float) -> None:
        self.app = app
        self.quick = quick
        self.probes = probes
        self.probe_timeout = probe_timeout
        self.config = app.config()
        self.attackers: list[Tab] = []
        self.others: list[Tab] = []  # other visitors' tabs (not the bystander's)
        self.phases: dict[str, Samples] = {"before": Samples(), "during": Samples(), "after": Samples()}
        self.peak = Footprint()
        self._lock = threading.Lock()
        self._visitors = 0
        self.bystander = self.open_tab(BYSTANDER_ADDRESS)
        self.first = self._say_bounded(self.bystander, PROBE)  # its session's first message takes a sandbox

    # -- tabs --------------------------------------------------------------------------------------------------------
    def open_tab(self, address: str, session_hash: str | None = None, load: bool = True) -> Tab:
        tab = Tab(self.app.url, self.config, session_hash=session_hash, address=address)
        if load:
            tab.open()
        return tab

    def tab(self, address: str = ATTACKER_ADDRESS, session_hash: str | None = None, load: bool = True) -> Tab:
        """A tab of the attacker's client (kept, so its session is ended after the attack)."""
        tab = self.open_tab(address, session_hash, load)
        with self._lock:
            self.attackers.append(tab)
        return tab

    def tabs(self, count: int, workers: int = 8) -> list[Tab | Exception]:
        """`count` tabs of the attacker's client opened at once (a failed opening is returned as its exception)."""

        def one(_: int) -> Tab | Exception:
            try:
                return self.tab()
            except Exception as exc:  # refused or broken: the attack records it
                return exc

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(count)))

    def visitor(self) -> Tab:
        """A tab of another visitor (its own browser and address); its session is ended after the attack."""
        tab = self.open_tab(self.fresh_visitor_address())
        with self._lock:
            self.others.append(tab)
        return tab

    def fresh_visitor_address(self) -> str:
        with self._lock:
            self._visitors += 1
            return f"198.51.100.{20 + self._visitors % 200}"

    def fresh_first_messages(self, count: int) -> list[Reply]:
        """`count` new visitors (each its own browser and address) each send their first message, one after the
        other: a new visitor beyond the warm pool needs a sandbox forked on the spot."""
        replies = []
        for _ in range(count):
            try:
                tab = self.open_tab(self.fresh_visitor_address())
            except Exception as exc:
                replies.append(Reply(0.0, False, "", f"could not open the page: {type(exc).__name__}: {exc}"[:200]))
                continue
            try:
                replies.append(self._say_bounded(tab, PROBE))
            finally:
                self.end_tab(tab)
        return replies

    # -- the bystander -----------------------------------------------------------------------------------------------
    def _say_bounded(self, tab: Tab, text: str, timeout: float | None = None) -> Reply:
        """`tab.say(text)`, given up after `timeout` seconds (the request goes on in the background)."""
        return self.bounded(lambda: tab.say(text), timeout or self.probe_timeout, f"no answer to {text!r}")

    def bounded(self, call: Callable[[], Reply], timeout: float, what: str) -> Reply:
        box: list[Reply] = []
        start = time.perf_counter()
        worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
        worker.start()
        worker.join(timeout)
        if box:
            return box[0]
        return Reply(time.perf_counter() - start, False, "", f"{what} within {timeout:.0f} s")

    def probe(self, phase: str, count: int | None = None, timeout: float | None = None) -> Samples:
        """The bystander sends `1+1` `count` times, one after the other."""
        samples = self.phases[phase]
        for _ in range(count or self.probes):
            samples.replies.append(self._say_bounded(self.bystander, PROBE, timeout))
            self.note_peak()
        return samples

    def alongside(self, attack: Callable[[], T], lead: float = 0.5, count: int | None = None) -> T:
        """Run `attack` while the bystander probes ("during"): the first probe `lead` seconds after it starts, the
        others while it lasts (at least one; at most `count`)."""
        box: list[Any] = []
        worker = threading.Thread(target=lambda: box.append(_capture(attack)), daemon=True)
        worker.start()
        worker.join(lead)
        sent = 0
        while sent < (count or self.probes) and (sent == 0 or worker.is_alive()):
            self.probe("during", 1)
            sent += 1
        worker.join()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- measurements ------------------------------------------------------------------------------------------------
    def note_peak(self) -> Footprint:
        """A footprint now, keeping the largest value of each figure seen during the attack."""
        now = self.app.footprint()
        for name, value in vars(now).items():
            if name == "host_available":
                if not self.peak.host_available or value < self.peak.host_available:
                    self.peak.host_available = value
            elif value > getattr(self.peak, name):
                setattr(self.peak, name, value)
        return now

    def scale(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    # -- the end ------------------------------------------------------------------------------------------------------
    def end_tab(self, tab: Tab, how: str = "new-session") -> None:
        """End a tab's session: "new-session" clicks New session (the old session is deleted at once), then closes
        the tab; "close" only closes it (a visitor who leaves)."""
        if how == "new-session" and tab._heartbeat is not None:
            with contextlib.suppress(Exception):
                self.bounded(tab.new_session, self.scale(10, 5), "New session")
        tab.close()
        with self._lock:
            for kept in (self.attackers, self.others):
                if tab in kept:
                    kept.remove(tab)

    def end_attackers(self, how: str) -> None:
        """End the attacker's sessions (see `end_tab`), and the other visitors' (always with New session)."""
        with self._lock:
            tabs, others = list(self.attackers), list(self.others)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda tab: self.end_tab(tab, how), tabs))
            list(pool.map(self.end_tab, others))

    def close(self) -> None:
        for tab in [*self.attackers, *self.others, self.bystander]:
            with contextlib.suppress(Exception):
                tab.close()


def _capture(call: Callable[[], T]) -> T | BaseException:
    try:
        return call()
    except BaseException as exc:  # handed back to the caller's thread
        return exc
