"""The leader's copies of each node's VMIs (scheduler.nodevmis): what one change does to them."""

from __future__ import annotations

from proto.spec import VMSpec
from proto.state import VMI
from scheduler.nodevmis import Copied, CopyPlan, plan, strays


def vmi(node: str | None) -> VMI:
    return VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, node_name=node)


def test_a_bound_vmi_is_copied_to_its_node_and_moves_with_it() -> None:
    assert plan(None, vmi(None), 1) == CopyPlan()  # not bound: no node hears of it
    assert plan(None, vmi("node1"), 2) == CopyPlan(put="node1.vm1")
    assert plan(Copied("node1.vm1", 2), vmi("node1"), 3) == CopyPlan(put="node1.vm1")
    assert plan(Copied("node1.vm1", 3), vmi("node2"), 4) == CopyPlan(put="node2.vm1", delete="node1.vm1")
    assert plan(Copied("node2.vm1", 4), vmi(None), 5) == CopyPlan(delete="node2.vm1")  # a new run, unbound
    assert plan(Copied("node2.vm1", 5), None, 6) == CopyPlan(delete="node2.vm1")


def test_an_older_update_changes_nothing() -> None:
    assert plan(Copied("node1.vm1", 7), vmi("node2"), 7) == CopyPlan()
    assert plan(Copied("node1.vm1", 7), None, 5) == CopyPlan()


def test_a_rebuild_removes_copies_nothing_wants() -> None:
    assert strays({"node1.vm1": 3, "node1.gone": 2, "node2.vm2": 4}, {"node1.vm1", "node2.vm2"}) == ["node1.gone"]
