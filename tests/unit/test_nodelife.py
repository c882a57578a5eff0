"""Node lifecycle on the scheduler's own clock (scheduler.nodelife): values in, decisions out."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.spec import VMSpec
from proto.state import NODE_LEASE_RENEW_S, VMI, Phase
from scheduler.nodelife import (
    MIN_SILENCE_S,
    Seen,
    Thresholds,
    Transition,
    Watched,
    lost,
    mark_unknown,
    observe,
    plan,
    readiness,
    restore,
    resume,
)

T = Thresholds(ready_within=15.0, lost_after=40.0)


def vmi(phase: Phase = Phase.RUNNING, node: str | None = "node1", before: Phase | None = None) -> VMI:
    return VMI(name="t", uid="u1", spec=VMSpec(name="t"), created_at=0.0, phase=phase, node_name=node,
               phase_before_unknown=before, started_at=5.0)


def test_silence_is_time_since_the_heartbeat_changed_not_its_value() -> None:
    # the handler's clock is a day behind: its timestamps say nothing about the scheduler's clock
    s = observe(None, heartbeat=-86400.0, now=100.0)
    assert readiness({"n": s}, 100.0, T) == {"n": True}
    s = observe(s, heartbeat=-86400.0, now=110.0)  # the same value read again: no beat
    assert (s.since, s.beating) == (100.0, False)
    s = observe(s, heartbeat=-86398.0, now=112.0)
    assert (s.since, s.beating) == (112.0, True)
    assert readiness({"n": s}, 127.0, T) == {"n": True}
    assert readiness({"n": s}, 127.5, T) == {"n": False}


def test_time_the_scheduler_could_not_see_the_bus_is_not_counted() -> None:
    seen = {"node1": Seen(1.0, since=100.0, beating=True)}
    assert plan([vmi()], seen, 500.0, T) == [(vmi(), Transition.TO_UNKNOWN)]  # had it been watching
    back = resume(seen, now=500.0)  # away for 400 s
    assert back == {"node1": Seen(1.0, since=500.0, beating=True)}
    assert plan([vmi()], back, 530.0, T) == []
    assert plan([vmi()], back, 541.0, T) == [(vmi(), Transition.TO_UNKNOWN)]


@pytest.mark.parametrize(("phase", "quiet", "expected"), [
    (Phase.RUNNING, 40.0, None),
    (Phase.RUNNING, 40.5, Transition.TO_UNKNOWN),
    (Phase.SCHEDULED, 41.0, Transition.TO_UNKNOWN),
    (Phase.FAILED, 1000.0, None),
    (Phase.SUCCEEDED, 1000.0, None),
    (Phase.UNKNOWN, 1000.0, None),  # stays Unknown while silent
])
def test_lost_node_makes_its_instances_unknown(phase: Phase, quiet: float, expected: Transition | None) -> None:
    seen = {"node1": Seen(1.0, since=0.0, beating=True)}
    got = plan([vmi(phase)], seen, quiet, T)
    assert got == ([] if expected is None else [(vmi(phase), expected)])


def test_other_nodes_and_unbound_instances_are_untouched() -> None:
    seen = {"node1": Seen(1.0, 0.0, True), "node2": Seen(1.0, 100.0, True)}
    vmis = [vmi(node="node2"), vmi(Phase.SCHEDULING, node=None), vmi(node="gone")]
    assert plan(vmis, seen, 120.0, T) == []


def test_heard_again_restores_only_with_proof_of_life() -> None:
    lost = vmi(Phase.UNKNOWN, before=Phase.RUNNING)
    first_sight = {"node1": Seen(1.0, since=100.0, beating=False)}  # a record read, nobody seen beating
    assert plan([lost], first_sight, 101.0, T) == []
    beating = {"node1": Seen(2.0, since=100.0, beating=True)}
    assert plan([lost], beating, 101.0, T) == [(lost, Transition.RESTORE)]


def test_mark_unknown_then_restore_round_trips() -> None:
    running = vmi()
    lost = mark_unknown(running, "u1", 42.0, now=1000.0)
    assert lost is not None and lost.phase is Phase.UNKNOWN and lost.phase_before_unknown is Phase.RUNNING
    ready = next(c for c in lost.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("Unknown", "NodeUnreachable") and "42s" in ready.message
    assert mark_unknown(lost, "u1", 50.0, 1001.0) is None
    back = restore(lost, "u1", now=1100.0)
    assert back is not None and back.phase is Phase.RUNNING and back.phase_before_unknown is None
    assert [(c.type, c.status) for c in back.conditions] == [("Ready", "True")]
    assert back.started_at == running.started_at


def test_transitions_refuse_another_instance_or_a_final_one() -> None:
    assert mark_unknown(vmi(), "other-uid", 50.0, 0.0) is None
    assert mark_unknown(vmi(Phase.FAILED), "u1", 50.0, 0.0) is None
    assert restore(vmi(Phase.UNKNOWN, before=Phase.RUNNING), "other-uid", 0.0) is None
    assert restore(vmi(Phase.RUNNING), "u1", 0.0) is None  # a report got there first


def test_one_knob_keeps_not_ready_no_later_than_lost() -> None:
    assert Thresholds.lost_after_s(8.0) == Thresholds(ready_within=8.0, lost_after=8.0)
    assert Thresholds.lost_after_s(120.0) == Thresholds(ready_within=15.0, lost_after=120.0)


def test_the_watched_vmis_follow_each_change() -> None:
    w = Watched()
    w.apply("a", vmi(node="node1"))
    w.apply("b", vmi(node="node2"))
    w.apply("c", vmi(node=None))  # not bound yet: no node's
    assert w.by_node == {"node1": {"a"}, "node2": {"b"}}
    w.apply("a", vmi(node="node2"))  # moved
    w.apply("b", vmi(phase=Phase.SUCCEEDED, node="node2"))  # ended: nothing moves it any more
    assert w.by_node == {"node2": {"a"}}
    w.apply("a", vmi(phase=Phase.UNKNOWN, node="node2", before=Phase.RUNNING))
    assert w.unknown == {"a"} and w.candidates([]) == {"a"}
    w.apply("a", None)  # deleted
    assert (w.by_node, w.unknown, w.candidates(["node2"])) == ({}, set(), set())


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
NODES = st.sampled_from([None, "node1", "node2", "node3"])
PHASES = st.sampled_from(list(Phase))
CHANGE = st.tuples(NAMES, st.none() | st.tuples(PHASES, NODES))
SEEN = st.fixed_dictionaries({n: st.builds(Seen, st.just(1.0), st.floats(0, 100), st.booleans())
                              for n in ("node1", "node2")})


@given(changes=st.lists(CHANGE, max_size=30), seen=SEEN, now=st.floats(0, 200))
def test_a_check_of_the_watched_vmis_decides_what_a_check_of_all_would(
        changes: list[tuple[str, tuple[Phase, str | None] | None]], seen: dict[str, Seen], now: float) -> None:
    w, current = Watched(), dict[str, VMI]()
    for name, state in changes:
        value = None if state is None else msgspec.structs.replace(
            vmi(phase=state[0], node=state[1], before=Phase.RUNNING), name=name)
        w.apply(name, value)
        if value is None:
            current.pop(name, None)
        else:
            current[name] = value
    everything = plan(current.values(), seen, now, T)
    watched = plan([current[n] for n in w.candidates(lost(seen, now, T))], seen, now, T)
    assert sorted(watched, key=lambda d: d[0].name) == sorted(everything, key=lambda d: d[0].name)


def test_a_node_stays_ready_through_a_lost_renewal_at_the_defaults() -> None:
    t = Thresholds()
    s = observe(None, heartbeat=0.0, now=0.0)
    s = observe(s, heartbeat=1.0, now=NODE_LEASE_RENEW_S)  # renewed
    # the next renewal is lost; the one after it is late by a second more than its interval
    late = 3 * NODE_LEASE_RENEW_S + 1.0 - 0.001
    assert readiness({"n": s}, late, t) == {"n": True}
    assert readiness({"n": s}, NODE_LEASE_RENEW_S + MIN_SILENCE_S + 0.001, t) == {"n": False}


@pytest.mark.parametrize("value", ["5", "14.9"])
def test_the_scheduler_refuses_a_node_lost_after_shorter_than_three_renewals(value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "scheduler", "--node-lost-after", value], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "--node-lost-after must be at least 15 s" in done.stderr
