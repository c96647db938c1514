"""Who is asking, and how much they may hold: a visitor's identity (a signed-in user, else a client address), a
sliding-window rate, the sandbox caps, and the run slots that share the server's messages fairly.

Every refusal is a `CapReached` whose message is one sentence saying what to do next (close another tab, wait about
N s), shown as it is; none of them is an error from the pool.
"""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from playground.formatting import plural, span

SLOT_POLL = 0.5  # how often a run waiting for a slot looks at its stop flag and updates its note


class CapReached(RuntimeError):
    """A visitor (or the whole server) is at a cap; the message says what to do, `retry_after` in about how long."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Visitor:
    """Who sends a request: the signed-in Hugging Face user when there is one, else the client's address."""

    address: str
    user: str | None = None

    @property
    def key(self) -> str:
        return f"user:{self.user}" if self.user else f"address:{self.address}"

    @property
    def where(self) -> str:
        """How a sentence names the visitor's share."""
        return "with your account" if self.user else "from your network"


LOCAL = Visitor("local")


def client_address(headers: Mapping[str, str], peer: str | None, trust_forwarded_for: bool) -> str:
    """The client's address: in a Space, what its proxy appended to X-Forwarded-For (the rightmost public address;
    entries further left are the client's own word, entries further right are the platform's internal hops);
    anywhere else the socket's peer address, since the header is then whatever the client chose to send."""
    if trust_forwarded_for:
        forwarded = [part.strip() for part in (headers.get("x-forwarded-for") or "").split(",") if part.strip()]
        for candidate in reversed(forwarded):
            try:
                if ipaddress.ip_address(candidate).is_global:
                    return candidate
            except ValueError:
                continue
        if forwarded:
            return forwarded[-1]
    return peer or "unknown"


def visitor_of(request: object, trust_forwarded_for: bool, user: str | None = None) -> Visitor:
    """The visitor behind a Gradio request (or the ASGI scope's headers and client, for the upload gate)."""
    headers = getattr(request, "headers", None) or {}
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None) if client is not None else None
    return Visitor(client_address(headers, peer, trust_forwarded_for), user)


def signed_in_user(request: object) -> str | None:
    """The Hugging Face user signed in on this page ("Sign in with Hugging Face"), if any."""
    try:
        from gradio.oauth import _get_valid_oauth_info_from_session

        info = _get_valid_oauth_info_from_session(request.session)  # type: ignore[attr-defined]
    except Exception:  # no sign-in on this server (no session middleware), or no such Gradio helper
        return None
    return (info or {}).get("userinfo", {}).get("preferred_username") or None


def about(seconds: float) -> str:
    """ "about 40 s", "about 3 min"."""
    return f"about {span(seconds)}"


class Rate:
    """At most `limit` events per `window` seconds, per key (a sliding window of event times)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._events: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def wait_needed(self, key: str, now: float | None = None) -> float:
        """0 if one more event is allowed now (and record it), else the seconds until one is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._events.setdefault(key, collections.deque())
            while events and now - events[0] >= self.window:
                events.popleft()
            if len(events) >= self.limit:
                return events[0] + self.window - now
            events.append(now)
            self._forget_idle(now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        if len(self._events) > 4096:  # keys whose every event has aged out hold nothing
            for key in [k for k, events in self._events.items() if not events or now - events[-1] >= self.window]:
                del self._events[key]


class NewSessions:
    """The cap on new sessions per minute: per client address, and for the whole server."""

    def __init__(self, per_address: int, total: int, per_visitor: bool) -> None:
        self.per_address, self.total = Rate(per_address), Rate(total)
        self.per_visitor = per_visitor

    def admit(self, visitor: Visitor, now: float | None = None) -> None:
        if self.per_visitor:
            wait = self.per_address.wait_needed(visitor.address, now)
            if wait:
                raise CapReached(
                    f"{plural(self.per_address.limit, 'new session')} a minute is the limit {visitor.where}, and it "
                    f"was reached: use a tab that is already open, or wait {about(wait)} and reload the page.",
                    wait,
                )
        wait = self.total.wait_needed("all", now)
        if wait:
            raise CapReached(
                f"The playground is starting too many sessions at once: wait {about(wait)} and reload the page.", wait
            )


@dataclass(frozen=True)
class Holding:
    """A session holding a sandbox, as the sandbox cap sees it: whose, and when it would give the sandbox back."""

    visitor: Visitor
    frees_in: float | None  # seconds until its sandbox is given back (a closed tab's grace, or idle expiry)


class SandboxCaps:
    """How many sandboxes a visitor, and the whole server, may hold at once."""

    def __init__(
        self, total: int, per_visitor: int, enforce_per_visitor: bool, tab_grace: float | None = None
    ) -> None:
        self.total, self.per_visitor, self.enforce_per_visitor = total, per_visitor, enforce_per_visitor
        self.tab_grace = tab_grace  # how long a closed tab keeps its sandbox (for a reload)

    def admit(self, visitor: Visitor, holdings: Iterable[Holding]) -> None:
        """Raise CapReached when `visitor` may not take one more sandbox, given who holds one now."""
        holdings = list(holdings)
        mine = [h for h in holdings if h.visitor.key == visitor.key]
        if self.enforce_per_visitor and len(mine) >= self.per_visitor:
            wait = _soonest(mine)
            close = "close another tab of this playground" + (
                f" and send again {span(self.tab_grace)} later (a closed tab keeps its sandbox that long, for a reload)"
                if self.tab_grace
                else ""
            )
            first = f"; the first of them is given back in {about(wait)}" if wait is not None else ""
            raise CapReached(
                f"You have {plural(len(mine), 'sandbox')} open {visitor.where} (the limit is {self.per_visitor}): "
                f"{close}{first}.",
                wait,
            )
        if len(holdings) >= self.total:
            wait = _soonest(holdings)
            when = f"in {about(wait)}" if wait is not None else "in a few minutes"
            raise CapReached(
                f"The playground is full: all {self.total} sandboxes are in use. Try again {when}; your message "
                "was not run.",
                wait,
            )


def _soonest(holdings: list[Holding]) -> float | None:
    times = [h.frees_in for h in holdings if h.frees_in is not None]
    return max(1.0, min(times)) if times else None


class RunSlots:
    """Messages running at once: at most `total` on the server and `per_visitor` for one visitor. The others wait in
    line (first come, first served, skipping a visitor at their cap), each told why it waits."""

    def __init__(self, total: int, per_visitor: int, enforce_per_visitor: bool) -> None:
        self.total, self.per_visitor, self.enforce_per_visitor = total, per_visitor, enforce_per_visitor
        self._running: collections.Counter[str] = collections.Counter()
        self._line: list[object] = []  # tickets, in arrival order
        self._owner: dict[object, Visitor] = {}
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        with self._cond:
            return sum(self._running.values())

    def acquire(self, visitor: Visitor, stopped: Callable[[], bool], waiting: Callable[[str], None]) -> bool:
        """Take a slot for `visitor`, waiting in line if need be (`waiting(reason)` says why, again when the reason
        changes). Returns False if `stopped()` became true first (no slot is held then)."""
        ticket = object()
        told = ""
        with self._cond:
            self._line.append(ticket)
            self._owner[ticket] = visitor
            try:
                while True:
                    reason = self._blocked(ticket, visitor)
                    if reason is None:
                        self._running[visitor.key] += 1
                        return True
                    if stopped():
                        return False
                    if reason and reason != told:
                        told = reason
                        self._cond.release()
                        try:
                            waiting(reason)
                        finally:
                            self._cond.acquire()
                        continue
                    self._cond.wait(SLOT_POLL)
            finally:
                self._line.remove(ticket)
                del self._owner[ticket]
                self._cond.notify_all()

    def release(self, visitor: Visitor) -> None:
        with self._cond:
            self._running[visitor.key] -= 1
            if self._running[visitor.key] <= 0:
                del self._running[visitor.key]
            self._cond.notify_all()

    def _blocked(self, ticket: object, visitor: Visitor) -> str | None:
        """Why `ticket` cannot start now (None: it can)."""
        if self.enforce_per_visitor and self._running[visitor.key] >= self.per_visitor:
            return (
                f"{plural(self._running[visitor.key], 'message')} {visitor.where} "
                f"{'is' if self._running[visitor.key] == 1 else 'are'} running (the limit is {self.per_visitor} at "
                "once); yours starts when one of them ends."
            )
        total = sum(self._running.values())
        ahead = 0
        for earlier in self._line:
            if earlier is ticket:
                break
            other = self._owner[earlier]
            if not (self.enforce_per_visitor and self._running[other.key] >= self.per_visitor):
                ahead += 1
        if total >= self.total:
            line = "yours is next" if not ahead else f"{plural(ahead, 'message')} before yours"
            return f"The playground is running {plural(total, 'message')} at once, its limit; {line}."
        return "" if ahead else None  # "": a message that arrived first is taking its slot
