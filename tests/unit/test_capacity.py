"""The capacity index: allocation kept as VMIs change, binds assumed before their write lands."""

from __future__ import annotations

import msgspec

from proto.overhead import VM_OVERHEAD_BYTES
from proto.quantity import parse_bytes
from proto.spec import Cpu, VMSpec
from proto.state import VMI, Node, Phase
from scheduler.capacity import STALE_MIN, CapacityIndex
from scheduler.placement import Request, place

GI = parse_bytes("1Gi")
OVERHEAD = VM_OVERHEAD_BYTES  # booked with each VM beyond its guest RAM (proto.overhead)


def node(name: str) -> Node:
    return Node(name=name, cpus=4, memory=8 * GI, kvm=False, heartbeat=0.0, started_at=0.0)


def vmi(name: str, on: str | None = None, memory: str = "1Gi", cores: int = 1, phase: Phase = Phase.SCHEDULED) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, memory=memory, cpu=Cpu(cores=cores)), created_at=0.0,
               node_name=on, phase=phase if on else Phase.PENDING)


def test_bound_instances_count_until_they_finish_or_go() -> None:
    index = CapacityIndex()
    index.observe("a", vmi("a", "n1", cores=2))
    index.observe("b", vmi("b", "n1"))
    assert index.allocation("n1") == (2 * (GI + OVERHEAD), 3, 2)
    index.observe("a", msgspec.structs.replace(vmi("a", "n1", cores=2), phase=Phase.SUCCEEDED))
    assert index.allocation("n1") == (GI + OVERHEAD, 1, 1)
    index.observe("b", None)
    assert index.allocation("n1") == (0, 0, 0)
    index.observe("c", vmi("c"))  # not bound: holds nothing
    assert index.allocation("n1") == (0, 0, 0)


def test_a_moved_or_resized_instance_is_counted_once_where_it_is() -> None:
    index = CapacityIndex()
    index.observe("a", vmi("a", "n1"))
    index.observe("a", vmi("a", "n1"))  # the same again (a status update): still once
    index.observe("a", vmi("a", "n2", memory="2Gi"))
    assert index.allocation("n1") == (0, 0, 0)
    assert index.allocation("n2") == (2 * GI + OVERHEAD, 1, 1)


def test_an_assumption_counts_until_forgotten() -> None:
    index = CapacityIndex()
    assumption = index.assume("a", "n1", Request(GI + OVERHEAD, 1, 0))
    assert index.allocation("n1") == (GI + OVERHEAD, 1, 1) and index.assumed("a") == "n1"
    # the unbound instance seen meanwhile (the write is in flight) leaves the assumption alone
    index.observe("a", vmi("a"))
    assert index.allocation("n1") == (GI + OVERHEAD, 1, 1)
    index.forget("a", assumption)  # the write conflicted
    assert index.allocation("n1") == (0, 0, 0) and index.assumed("a") is None


def test_forgetting_an_older_assumption_leaves_the_newer_one() -> None:
    index = CapacityIndex()
    older = index.assume("a", "n1", Request(GI + OVERHEAD, 1, 0))  # the VM controller's create, in flight
    index.assume("a", "n2", Request(GI + OVERHEAD, 1, 0))  # the binder's decision of the same instance
    index.forget("a", older)  # the create failed
    assert index.assumed("a") == "n2" and index.allocation("n2") == (GI + OVERHEAD, 1, 1)
    assert index.allocation("n1") == (0, 0, 0)


def test_the_bind_seen_replaces_the_assumption_and_forget_leaves_it() -> None:
    index = CapacityIndex()
    assumption = index.assume("a", "n1", Request(GI + OVERHEAD, 1, 0))
    index.observe("a", vmi("a", "n1"))
    assert index.allocation("n1") == (GI + OVERHEAD, 1, 1) and index.assumed("a") is None
    index.forget("a", assumption)  # a late failure report of an older write must not drop a real bind
    assert index.allocation("n1") == (GI + OVERHEAD, 1, 1)


def test_a_deleted_instance_drops_its_assumption() -> None:
    index = CapacityIndex()
    index.assume("a", "n1", Request(GI + OVERHEAD, 1, 0))
    index.observe("a", None)
    assert index.allocation("n1") == (0, 0, 0)


def test_usages_follow_nodes_readiness_and_allocation() -> None:
    index = CapacityIndex()
    index.observe("a", vmi("a", "n2"))  # bound to a node not known yet: counted once it is
    index.sync_nodes({"n2": node("n2"), "n1": node("n1")}, {"n1": True})
    usages = index.usages()
    assert [(u.node.name, u.ready, u.vmis) for u in usages] == [("n1", True, 0), ("n2", False, 1)]
    index.assume("b", "n1", Request(GI + OVERHEAD, 1, 0))
    index.sync_nodes({"n1": node("n1"), "n2": node("n2")}, {"n1": True, "n2": True})
    assert [(u.node.name, u.ready, u.used_memory) for u in index.usages()] == [
        ("n1", True, GI + OVERHEAD), ("n2", True, GI + OVERHEAD)]
    bigger = msgspec.structs.replace(node("n1"), memory=16 * GI)
    index.sync_nodes({"n1": bigger, "n2": node("n2")}, {"n1": True, "n2": True})
    assert index.usages()[0].node.memory == 16 * GI
    index.sync_nodes({"n1": bigger}, {"n1": True})
    assert [u.node.name for u in index.usages()] == ["n1"]


def test_candidates_come_least_allocated_first_each_node_once() -> None:
    index = CapacityIndex()
    nodes = {n: node(n) for n in ("n1", "n2", "n3", "n4")}
    index.sync_nodes(nodes, {"n1": True, "n2": True, "n3": True})  # n4 not Ready: last
    index.observe("a", vmi("a", "n1", memory="4Gi"))
    index.observe("b", vmi("b", "n2"))
    assert [u.node.name for u in index.candidates()] == ["n3", "n2", "n1", "n4"]
    for i in range(5):  # many changes: stale entries are skipped, each node still comes once
        index.assume(f"x{i}", "n3", Request(GI + OVERHEAD, 1, 0))
    assert [u.node.name for u in index.candidates()] == ["n2", "n1", "n3", "n4"]
    del nodes["n2"]
    index.sync_nodes(nodes, {"n1": True, "n3": True})
    assert [u.node.name for u in index.candidates()] == ["n1", "n3", "n4"]
    nodes["n2"] = node("n2")  # back again: once, with what it holds
    index.sync_nodes(nodes, {"n1": True, "n2": True, "n3": True})
    assert [(u.node.name, u.vmis) for u in index.candidates()] == [("n2", 1), ("n1", 1), ("n3", 5), ("n4", 0)]


def test_placing_from_the_candidates_spreads_exactly_over_alike_nodes() -> None:
    index = CapacityIndex()
    index.sync_nodes({f"n{i:02d}": node(f"n{i:02d}") for i in range(30)}, {f"n{i:02d}": True for i in range(30)})
    for i in range(300):
        spec = VMSpec(name=f"v{i}", memory="64Mi")
        choice = place(spec, index.candidates(), enough=4)
        assert choice.node is not None and choice.scanned == 4  # not all 30
        index.assume(f"v{i}", choice.node, Request.of(spec))
    assert {index.allocation(f"n{i:02d}")[2] for i in range(30)} == {10}


def test_a_node_no_vm_fits_does_not_keep_stale_entries_under_it() -> None:
    """A node that stays least allocated (only VMs selecting it may go there, and none do) holds the
    top of the heap, so popping stale entries off the top never reaches those beneath it: they are
    cleared out by count instead, or every decision would walk over all of them (4 ms a decision at
    1,000 nodes before). Binds assumed, then seen bound: one stale entry each (the bind seen as
    assumed leaves the node's entry as it is)."""
    index = CapacityIndex()
    pool = {f"n{i:03d}": msgspec.structs.replace(node(f"n{i:03d}"), labels={"pool": "a"}) for i in range(200)}
    lonely = msgspec.structs.replace(node("lonely"), labels={"pool": "b"})
    index.sync_nodes({**pool, "lonely": lonely}, dict.fromkeys([*pool, "lonely"], True))
    for i in range(1000):
        spec = VMSpec(name=f"v{i}", memory="64Mi", node_selector={"pool": "a"})
        choice = place(spec, index.candidates(), enough=4)
        assert choice.node is not None and choice.node != "lonely"
        index.assume(f"v{i}", choice.node, Request.of(spec))
        index.observe(f"v{i}", msgspec.structs.replace(vmi(f"v{i}", choice.node, memory="64Mi"), spec=spec))
        # each node's one valid entry, and at most STALE_MIN stale ones
        assert len(index._heap) <= len(pool) + 1 + STALE_MIN
    assert next(index.candidates()).node.name == "lonely"  # still first: nothing went there
    assert {index.allocation(n)[2] for n in pool} == {5}


def test_a_bind_seen_as_assumed_leaves_the_nodes_entry_as_it_is() -> None:
    """What the node holds does not change when the assumed bind is seen: no new heap entry (a
    burst's binds would leave twice the stale entries, cleared out twice as often)."""
    index = CapacityIndex()
    index.sync_nodes({"n1": node("n1")}, {"n1": True})
    index.assume("a", "n1", Request.of(vmi("a", "n1").spec))
    assert next(index.candidates()).used_memory == GI + OVERHEAD
    index.observe("a", vmi("a", "n1"))
    assert not index._stale  # nothing for the next decision to renew
    assert next(index.candidates()).used_memory == GI + OVERHEAD
    assert index.assumed("a") is None and index.allocation("n1") == (GI + OVERHEAD, 1, 1)
    index.observe("a", vmi("a", "n1", memory="2Gi"))  # resized: counted again, a new entry
    assert index.allocation("n1") == (2 * GI + OVERHEAD, 1, 1)
    assert next(index.candidates()).used_memory == 2 * GI + OVERHEAD


def sized(name: str, memory_gi: int = 8, cpus: int = 4, **labels: str) -> Node:
    return Node(name=name, cpus=cpus, memory=memory_gi * GI, kvm=False, heartbeat=0.0, started_at=0.0, labels=labels)


def test_alike_follows_the_nodes_sizes() -> None:
    index = CapacityIndex()
    assert index.alike()  # no node: nothing differs
    nodes = {n: sized(n) for n in ("a", "b")}
    index.sync_nodes(nodes, {"a": True, "b": True})
    assert index.alike()
    nodes["c"] = sized("c", memory_gi=16)
    index.sync_nodes(nodes, {"a": True})  # readiness does not make a node another size
    assert not index.alike()
    nodes["c"] = sized("c")  # its record again, now the others' size
    index.sync_nodes(nodes, {})
    assert index.alike()
    nodes["d"] = sized("d", cpus=8)
    index.sync_nodes(nodes, {})
    assert not index.alike()
    del nodes["d"]
    index.sync_nodes(nodes, {})
    assert index.alike()


def test_over_alike_nodes_the_first_that_fits_is_the_one_scoring_every_node_picks() -> None:
    # names that begin one another, nodes not Ready or not matching, VMs of different sizes: a burst
    # of decisions, each first-fit over the candidates compared with scoring every node
    names = ["node1", "node10", "node11", "node2", "node20", "node3", "w", "w1", "x"]
    nodes = {n: sized(n, zone="b" if n.startswith("w") else "a") for n in names}
    ready = {n: n != "node3" for n in names}
    index = CapacityIndex()
    index.sync_nodes(nodes, ready)
    assert index.alike()
    sizes = ["64Mi", "1Gi", "256Mi", "2Gi", "128Mi"]
    placed = 0
    for i in range(120):
        selector = {"zone": "a"} if i % 7 == 0 else {}
        spec = VMSpec(name=f"v{i}", memory=sizes[i % len(sizes)], cpu=Cpu(cores=1 + i % 3), node_selector=selector)
        everyone = place(spec, index.usages())
        first = place(spec, index.candidates(), enough=1)
        assert first.node == everyone.node, (i, first, everyone)
        if first.node is None:
            continue
        assert first.scanned <= len(names)
        index.assume(f"v{i}", first.node, Request.of(spec))
        placed += 1
    assert placed > 60  # the nodes filled up along the way, so fitting was tested as well as scoring
