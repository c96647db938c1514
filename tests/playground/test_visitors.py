"""Who a visitor is and what they may hold: the client's address (a Space's proxy trusted, nobody else's), the
sliding-window rate, the sandbox caps with the sentence a visitor reads, and the run slots' fair line."""

from __future__ import annotations

import threading

import pytest

from playground.visitors import CapReached, Holding, NewSessions, Rate, RunSlots, SandboxCaps, Visitor, client_address
from tests.support.harness import wait_until


def test_the_client_address_is_the_proxys_word_only_in_a_space():
    spoofed = {
        "x-forwarded-for": "1.2.3.4, 93.184.216.34, 10.0.0.7"
    }  # client's own claim, the edge's, an internal hop
    assert client_address(spoofed, "10.0.0.9", trust_forwarded_for=True) == "93.184.216.34"
    assert client_address(spoofed, "10.0.0.9", trust_forwarded_for=False) == "10.0.0.9"  # anywhere else: the socket
    assert client_address({}, "127.0.0.1", trust_forwarded_for=True) == "127.0.0.1"
    assert client_address({"x-forwarded-for": "10.1.1.1"}, "10.0.0.9", trust_forwarded_for=True) == "10.1.1.1"
    assert Visitor("1.1.1.1").key != Visitor("1.1.1.1", user="ana").key  # a signed-in user is counted as themself


def test_a_rate_allows_its_limit_per_window_and_says_how_long_to_wait():
    rate = Rate(2, window=60)
    assert rate.wait_needed("a", now=0) == 0 and rate.wait_needed("a", now=1) == 0
    assert rate.wait_needed("a", now=2) == pytest.approx(58)
    assert rate.wait_needed("b", now=2) == 0  # per key
    assert rate.wait_needed("a", now=61) == 0  # the first event aged out


def test_new_sessions_are_capped_per_address_and_in_all():
    caps = NewSessions(per_address=1, total=2, per_visitor=True)
    caps.admit(Visitor("1.1.1.1"), now=0)
    with pytest.raises(CapReached, match=r"1 new session a minute is the limit from your network.*wait about 60 s"):
        caps.admit(Visitor("1.1.1.1"), now=0)
    caps.admit(Visitor("2.2.2.2"), now=0)
    with pytest.raises(CapReached, match="starting too many sessions"):
        caps.admit(Visitor("3.3.3.3"), now=0)
    NewSessions(per_address=1, total=9, per_visitor=False).admit(
        Visitor("1.1.1.1"), now=0
    )  # local: no per-address cap


def test_the_sandbox_cap_says_what_to_do_and_when():
    caps = SandboxCaps(total=3, per_visitor=2, enforce_per_visitor=True, tab_grace=120.0)
    me, other = Visitor("1.1.1.1"), Visitor("2.2.2.2")
    caps.admit(me, [Holding(me, None)])
    with pytest.raises(CapReached) as told:
        caps.admit(me, [Holding(me, 40.0), Holding(me, None)])
    assert told.value.message == (
        "You have 2 sandboxes open from your network (the limit is 2): close another tab of this playground and send "
        "again 2 min later (a closed tab keeps its sandbox that long, for a reload); the first of them is given back "
        "in about 40 s."
    )
    with pytest.raises(CapReached, match=r"The playground is full: all 3 sandboxes are in use\. Try again in about"):
        caps.admit(other, [Holding(me, None), Holding(me, 100.0), Holding(Visitor("3.3.3.3"), None)])


def test_run_slots_keep_a_visitors_excess_waiting_behind_its_own_runs_and_let_others_through():
    slots = RunSlots(total=3, per_visitor=1, enforce_per_visitor=True)
    busy, bystander = Visitor("1.1.1.1"), Visitor("2.2.2.2")
    assert slots.acquire(busy, lambda: False, lambda why: None)
    told: list[str] = []
    got = threading.Event()
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: slots.acquire(busy, stop.is_set, told.append) and got.set())
    waiter.start()
    wait_until(lambda: told)
    assert "1 message from your network is running (the limit is 1 at once)" in told[0]
    assert slots.acquire(bystander, lambda: False, lambda why: None)  # not stuck behind the busy visitor's line
    slots.release(busy)
    assert got.wait(5)
    stop.set()
    assert not slots.acquire(busy, stop.is_set, told.append)  # stopped while waiting: no slot is taken
    slots.release(busy)
    slots.release(bystander)
    assert slots.running == 0
