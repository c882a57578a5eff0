"""bench/lane.py's wait: it ends once what is left has no room in the cluster (Unschedulable), not only
when everything runs; while anything else is under way it waits on."""

from __future__ import annotations

import sys

import msgspec

from proto.spec import Cpu, VMSpec
from proto.state import VMI, Condition, Phase
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from lane import Lane  # noqa: E402 - bench/, as the benches

NO_ROOM = Condition(type="PodScheduled", status="False", reason="Unschedulable",
                    message="0/2 nodes are available: 2 Insufficient cpu.")


def vmi(name: str, phase: Phase, *conditions: Condition) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, memory="64M", cpu=Cpu(cores=1)), created_at=0.0,
               phase=phase, conditions=list(conditions))


def lane(*vmis: VMI, names: int | None = None) -> Lane:
    made = Lane([f"lane-{i:03d}" for i in range(names if names is not None else len(vmis))])
    for name, v in zip(made.names, vmis, strict=False):
        made.on_change(name, msgspec.structs.replace(v, name=name))
    return made


def test_the_rest_unschedulable_is_no_room() -> None:
    full = lane(vmi("a", Phase.RUNNING), vmi("b", Phase.FAILED), vmi("c", Phase.SCHEDULING, NO_ROOM))
    assert full.roomless() and not full.settled()


def test_all_settled_is_not_roomless() -> None:
    assert not lane(vmi("a", Phase.RUNNING), vmi("b", Phase.SUCCEEDED)).roomless()


def test_one_still_on_its_way_keeps_the_lane_waiting() -> None:
    assert not lane(vmi("a", Phase.SCHEDULED), vmi("b", Phase.SCHEDULING, NO_ROOM)).roomless()
    assert not lane(vmi("a", Phase.PENDING), vmi("b", Phase.SCHEDULING, NO_ROOM)).roomless()


def test_one_not_seen_yet_keeps_the_lane_waiting() -> None:
    assert not lane(vmi("a", Phase.SCHEDULING, NO_ROOM), names=2).roomless()


def test_a_scheduled_condition_or_another_reason_is_not_no_room() -> None:
    bound = Condition(type="PodScheduled", status="True", reason="Scheduled")
    other = Condition(type="PodScheduled", status="False", reason="SchedulingGated")
    assert not lane(vmi("a", Phase.SCHEDULED, bound)).roomless()
    assert not lane(vmi("a", Phase.SCHEDULING, other)).roomless()
