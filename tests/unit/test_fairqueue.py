"""The fair admission of a service's requests (servicekit.fairqueue)."""

from __future__ import annotations

import pytest

from servicekit.fairqueue import Admission, FairQueue, flow_of


def test_a_client_is_its_inbox() -> None:
    assert flow_of("_INBOX.abc123.7") == "_INBOX.abc123"  # nats-py's request(): <inbox>.<token>
    assert flow_of("_INBOX_control.abc.42") == "_INBOX_control.abc"  # a role's own prefix
    assert flow_of("_INBOX.abc123") == "_INBOX.abc123"  # publish with an inbox as the reply
    assert flow_of("reply") == "reply"
    assert flow_of("") == ""


def test_a_person_is_served_before_a_floods_backlog() -> None:
    q: FairQueue[str] = FairQueue(running=2, waiting=100)
    assert [q.admit("flood", f"f{i}") for i in range(2)] == [Admission.RUN] * 2
    assert all(q.admit("flood", f"f{i}") is Admission.QUEUED for i in range(2, 40))
    assert q.admit("person", "p0") is Admission.QUEUED
    # the person's one request is next after the flood's first waiting one, not after all 38
    assert [q.done(), q.done(), q.done()] == ["f2", "p0", "f3"]
    assert q.running == 2 and q.waiting == 36


def test_flows_take_turns_in_the_order_they_came() -> None:
    q: FairQueue[str] = FairQueue(running=1, waiting=100)
    assert q.admit("a", "a0") is Admission.RUN
    for item in ("a1", "a2", "b1", "c1", "b2"):
        assert q.admit(item[0], item) is Admission.QUEUED
    served = [q.done() for _ in range(5)]
    assert served == ["a1", "b1", "c1", "a2", "b2"]
    assert q.done() is None and (q.running, q.waiting) == (0, 0)
    assert q.admit("a", "again") is Admission.RUN  # the slot is free again


def test_the_waiting_room_is_shared_by_every_client() -> None:
    q: FairQueue[str] = FairQueue(running=1, waiting=10)
    q.admit("flood", "run")
    admitted = [q.admit("flood", str(i)) for i in range(6)]
    assert admitted == [Admission.QUEUED] * 6  # one client may hold most of it
    for client in "abcd":
        assert q.admit(client, client) is Admission.QUEUED
    assert q.waiting == 10 and q.admit("late", "x") is Admission.REFUSED  # all flows together
    assert q.admit("flood", "more") is Admission.REFUSED


def test_a_refused_or_finished_request_leaves_the_counts_true() -> None:
    q: FairQueue[int] = FairQueue(running=1, waiting=0)
    assert q.admit("a", 1) is Admission.RUN
    assert q.admit("b", 2) is Admission.REFUSED
    assert q.done() is None
    with pytest.raises(RuntimeError):
        q.done()
    with pytest.raises(ValueError):
        FairQueue(running=0, waiting=1)
