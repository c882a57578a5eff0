"""Leader election by a KV lease (scheduler.lease): monotonic clocks, revisions, no wall clocks."""

from __future__ import annotations

import pytest

from scheduler.lease import Step, Timing, View, seen, step, still_leading

T = Timing(duration=3.0, renew_every=1.0, renew_deadline=2.0)


def test_no_lease_is_created() -> None:
    assert step(seen(None, None, None, 3.0, 10.0), "me", 10.0, None, T) is Step.CREATE


def test_another_holders_lease_is_taken_only_after_it_stood_still_for_its_duration() -> None:
    view = seen(None, 7, "other", 3.0, now=100.0)
    assert step(view, "me", 103.0, None, T) is Step.WAIT
    assert step(view, "me", 103.1, None, T) is Step.TAKE_OVER
    # renewed meanwhile: the count starts again from when the new revision was seen
    renewed = seen(view, 8, "other", 3.0, now=102.5)
    assert renewed.first_seen == 102.5
    assert step(renewed, "me", 105.0, None, T) is Step.WAIT
    # the same revision read again keeps the count
    assert seen(renewed, 8, "other", 3.0, now=104.0) is renewed


def test_the_holders_own_duration_counts() -> None:
    long = seen(None, 7, "other", 30.0, now=0.0)
    assert step(long, "me", 29.0, None, T) is Step.WAIT
    assert step(long, "me", 30.5, None, T) is Step.TAKE_OVER


def test_the_holder_renews_on_its_schedule() -> None:
    mine = View(9, "me", 3.0, first_seen=50.0)
    assert step(mine, "me", 50.5, last_renewed=50.0, timing=T) is Step.WAIT
    assert step(mine, "me", 51.0, last_renewed=50.0, timing=T) is Step.RENEW
    # a holder that stepped down (it could not renew) and finds its lease untouched takes it back at once
    assert step(mine, "me", 500.0, last_renewed=50.0, timing=T) is Step.RENEW


def test_the_holder_stops_leading_before_anyone_may_take_over() -> None:
    assert still_leading(50.0, 51.9, T)
    assert not still_leading(50.0, 52.0, T)
    assert not still_leading(None, 0.0, T)
    # a candidate that saw the renewal no earlier than it began waits longer than the deadline
    assert T.renew_deadline < T.duration


@pytest.mark.parametrize(("every", "deadline", "duration"), [(1.0, 1.0, 3.0), (1.0, 3.0, 3.0), (0.0, 1.0, 2.0)])
def test_unsafe_timings_are_refused(every: float, deadline: float, duration: float) -> None:
    with pytest.raises(ValueError, match="renew_every < renew_deadline < duration"):
        Timing(duration=duration, renew_every=every, renew_deadline=deadline)
