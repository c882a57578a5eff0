"""Launch slots: a few instances start at once, the rest in order of creation."""

from __future__ import annotations

import pytest

from handler.agent import default_launch_slots
from handler.launchslots import LaunchSlots


def test_the_first_come_take_the_slots_and_the_rest_wait() -> None:
    slots = LaunchSlots(2)
    assert slots.take("a", created=1.0, now=10.0)
    assert slots.take("b", created=2.0, now=10.0)
    assert not slots.take("c", created=3.0, now=10.0)
    assert slots.waiting == 1
    assert slots.take("a", created=1.0, now=11.0)  # asking again while holding it keeps it


def test_a_slot_given_back_goes_to_the_oldest_waiting_not_to_whoever_asks_first() -> None:
    slots = LaunchSlots(1)
    assert slots.take("first", created=1.0, now=0.0)
    assert not slots.take("young", created=9.0, now=0.0)
    assert not slots.take("old", created=5.0, now=0.0)
    assert slots.release("first") == ["old"]
    assert not slots.take("young", created=9.0, now=1.0)  # not its turn yet
    assert slots.take("old", created=5.0, now=1.0)
    assert slots.release("old") == ["young"]
    assert slots.take("young", created=9.0, now=2.0)


def test_two_free_slots_name_the_two_oldest_and_either_may_take_first() -> None:
    slots = LaunchSlots(2)
    assert slots.take("a", created=1.0, now=0.0) and slots.take("b", created=2.0, now=0.0)
    for name, created in (("e", 5.0), ("c", 3.0), ("d", 4.0)):
        assert not slots.take(name, created, now=0.0)
    slots.release("a")
    assert slots.release("b") == ["c", "d"]
    assert slots.take("d", created=4.0, now=1.0)  # the second in line need not wait for the first
    assert not slots.take("e", created=5.0, now=1.0)
    assert slots.take("c", created=3.0, now=1.0)


def test_a_launch_holding_its_slot_too_long_gives_it_up_to_the_next() -> None:
    slots = LaunchSlots(1, hold_s=10.0)
    assert slots.take("slow", created=1.0, now=100.0)
    assert not slots.take("next", created=2.0, now=100.0)
    assert slots.expire(now=105.0) == []
    assert slots.expire(now=110.5) == ["next"]
    assert not slots.holds("slow")
    assert slots.take("next", created=2.0, now=110.5)
    assert slots.release("slow") == []  # its late end frees nothing more


def test_one_that_leaves_the_line_is_no_longer_waited_for() -> None:
    slots = LaunchSlots(1)
    assert slots.take("a", created=1.0, now=0.0)
    assert not slots.take("gone", created=2.0, now=0.0)
    assert not slots.take("b", created=3.0, now=0.0)
    assert slots.knows("gone")
    assert slots.release("gone") == []  # deleted while waiting: the slot is still held by a
    assert not slots.knows("gone")
    assert slots.release("a") == ["b"]


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LaunchSlots(0)


def test_busy_while_any_launch_holds_a_slot_or_waits() -> None:
    slots = LaunchSlots(1)
    assert not slots.busy
    assert slots.take("a", created=1.0, now=10.0)
    assert not slots.take("b", created=2.0, now=10.0)
    assert slots.busy
    assert slots.release("a") == ["b"]
    assert slots.busy  # b's turn has come; it has not taken it yet
    assert slots.take("b", created=2.0, now=11.0)
    slots.release("b")
    assert not slots.busy
    slots.take("c", created=3.0, now=12.0)
    slots.clear()
    assert not slots.busy and not slots.knows("c")


def test_a_node_launches_one_per_core_and_one_more() -> None:
    assert default_launch_slots(2) == 3
    assert default_launch_slots(1) == 2
    assert default_launch_slots() >= 2
