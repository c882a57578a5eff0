from collections.abc import Iterator

import msgspec

from proto.overhead import footprint
from proto.quantity import parse_bytes
from proto.spec import Cpu, VMSpec
from proto.state import VMI, Node, Phase
from scheduler.placement import NodeUsage, place, ready_by_heartbeat
from scheduler.placement import usage as usage_of

NOW = 1000.0


def node(name: str, memory: str = "4Gi", cpus: int = 2, heartbeat: float = NOW, **labels: str) -> Node:
    return Node(name=name, cpus=cpus, memory=parse_bytes(memory), kvm=False, heartbeat=heartbeat,
                started_at=0.0, labels=labels)


def vmi(name: str, on: str | None, memory: str = "1Gi", phase: Phase = Phase.RUNNING) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, memory=memory), created_at=0.0, phase=phase, node_name=on)


def usage(nodes: list[Node], vmis: list[VMI], now: float) -> list[NodeUsage]:
    """Readiness as the caller judged it; here by heartbeat age, one verdict per node."""
    return usage_of(nodes, vmis, ready_by_heartbeat(nodes, now))


def test_readiness_is_the_callers_verdict() -> None:
    # a heartbeat a day old on a node the scheduler heard a moment ago: it is Ready
    nodes = [node("a", heartbeat=NOW - 86400), node("b")]
    assert place(VMSpec(name="x", memory="64M"), usage_of(nodes, [], {"a": True, "b": False})).node == "a"
    # no verdict at all: not Ready
    assert place(VMSpec(name="x", memory="64M"), usage_of(nodes, [], {})).node is None


def test_fits_on_the_only_ready_node() -> None:
    nodes = [node("a"), node("b", heartbeat=NOW - 60)]
    result = place(VMSpec(name="x", memory="64M"), usage(nodes, [], NOW))
    assert result.node == "a"


def test_does_not_fit_says_why_per_node() -> None:
    nodes = [node("a", memory="1Gi"), node("b", memory="1Gi")]
    busy = [vmi("v1", "a", "900Mi"), vmi("v2", "b", "900Mi")]
    result = place(VMSpec(name="x", memory="512Mi"), usage(nodes, busy, NOW))
    assert result.node is None
    assert result.message == "0/2 nodes are available: 2 Insufficient memory."


def test_finished_instances_free_their_memory() -> None:
    nodes = [node("a", memory="1Gi")]
    done = [vmi("v1", "a", "900Mi", phase=Phase.SUCCEEDED)]
    assert place(VMSpec(name="x", memory="512Mi"), usage(nodes, done, NOW)).node == "a"


def test_cpu_overcommit_has_a_limit() -> None:
    nodes = [node("a", cpus=1)]
    result = place(VMSpec(name="x", memory="64M", cpu=Cpu(cores=11)), usage(nodes, [], NOW))
    assert result.node is None and "Insufficient cpu" in result.message


def test_node_selector_filters() -> None:
    nodes = [node("a"), node("b", zone="edge")]
    spec = VMSpec(name="x", memory="64M", node_selector={"zone": "edge"})
    assert place(spec, usage(nodes, [], NOW)).node == "b"
    spec = VMSpec(name="x", memory="64M", node_selector={"zone": "core"})
    result = place(spec, usage(nodes, [], NOW))
    assert result.node is None and "2 node(s) didn't match node selector" in result.message


def test_least_allocated_spreads() -> None:
    nodes = [node("a"), node("b")]
    placed: list[VMI] = []
    for i in range(4):
        choice = place(VMSpec(name=f"v{i}", memory="512Mi"), usage(nodes, placed, NOW)).node
        assert choice is not None
        placed.append(vmi(f"v{i}", choice, "512Mi"))
    assert sorted(v.node_name or "" for v in placed) == ["a", "a", "b", "b"]


def test_prefers_the_emptier_node() -> None:
    nodes = [node("a"), node("b")]
    assert place(VMSpec(name="x", memory="64M"), usage(nodes, [vmi("v", "a")], NOW)).node == "b"


def test_a_bridge_network_on_a_vlan_goes_only_to_a_node_that_makes_vlan_ports() -> None:
    nodes = [node("a"), msgspec.structs.replace(node("b"), vlan_access_ports=True)]
    spec = VMSpec(name="x", memory="64M")
    assert place(spec, usage(nodes, [], NOW), vlan_ports=True).node == "b"
    assert place(spec, usage(nodes[:1], [], NOW)).node == "a"  # no VLAN asked: any node
    result = place(spec, usage(nodes[:1], [], NOW), vlan_ports=True)
    assert result.node is None
    assert result.message == "0/1 nodes are available: 1 node(s) couldn't make VLAN access ports on a bridge."


def test_a_bridge_network_goes_only_to_a_node_that_allows_its_bridge() -> None:
    nodes = [msgspec.structs.replace(node("a"), allowed_bridges=["br-lab"]),
             msgspec.structs.replace(node("b"), allowed_bridges=["br-lab", "multus-bridge"])]
    spec = VMSpec(name="x", memory="64M")
    assert place(spec, usage(nodes, [], NOW), bridges=frozenset({"multus-bridge"})).node == "b"
    result = place(spec, usage(nodes[:1], [], NOW), bridges=frozenset({"multus-bridge"}))
    assert result.node is None
    assert result.message == "0/1 nodes are available: 1 node(s) didn't allow the bridge multus-bridge."


def test_an_ovs_network_goes_only_to_a_node_with_its_bridge() -> None:
    nodes = [node("a"), msgspec.structs.replace(node("b"), ovs_bridges=["br1"])]
    spec = VMSpec(name="x", memory="64M")
    assert place(spec, usage(nodes, [], NOW), ovs=frozenset({"br1"})).node == "b"
    result = place(spec, usage(nodes[:1], [], NOW), ovs=frozenset({"br1"}))
    assert result.node is None
    assert result.message == "0/1 nodes are available: 1 node(s) didn't have the Open vSwitch bridge br1."


def test_enough_stops_looking_once_that_many_fit() -> None:
    nodes = [node(f"n{i}") for i in range(10)]
    looked: list[str] = []

    def in_order() -> Iterator[NodeUsage]:
        for u in usage(nodes, [vmi("v", "n0", "3Gi")], NOW):
            looked.append(u.node.name)
            yield u

    # n0 is too full, n1..n3 fit: the best of those three, and nothing read beyond them
    result = place(VMSpec(name="x", memory="2Gi"), in_order(), enough=3)
    assert (result.node, result.scanned, looked) == ("n1", 4, ["n0", "n1", "n2", "n3"])


def test_sampling_still_says_why_no_node_fits_counting_every_node() -> None:
    nodes = [node(f"n{i}", memory="1Gi") for i in range(5)] + [node("sel", memory="8Gi", zone="edge")]
    result = place(VMSpec(name="x", memory="2Gi"), usage(nodes, [], NOW), enough=2)
    assert result.node == "sel"
    result = place(VMSpec(name="x", memory="16Gi"), usage(nodes, [], NOW), enough=2)
    assert result.node is None and result.scanned == 6
    assert result.message == "0/6 nodes are available: 6 Insufficient memory."


def test_memory_is_booked_with_each_vms_overhead() -> None:
    # guest RAM alone would put 16 of these on the node; with each one's launcher, libvirtd and
    # QEMU overhead booked as well, the node is full sooner and the next is refused with the reason
    per_vm = footprint(VMSpec(name="x", memory="64Mi"))
    assert per_vm > parse_bytes("64Mi")
    nodes = [node("a", memory="1Gi", cpus=4)]
    placed: list[VMI] = []
    while (choice := place(VMSpec(name="x", memory="64Mi"), usage(nodes, placed, NOW))).node is not None:
        placed.append(vmi(f"v{len(placed)}", choice.node, "64Mi"))
    assert len(placed) == parse_bytes("1Gi") // per_vm < 16
    assert choice.message == "0/1 nodes are available: 1 Insufficient memory."
    assert usage(nodes, placed, NOW)[0].used_memory == len(placed) * per_vm


def test_alike_nodes_tie_to_the_smallest_name_and_a_longer_name_beats_its_own_prefix() -> None:
    spec = VMSpec(name="x", memory="64M")
    for order in (["b", "a2", "a10", "c"], ["c", "a10", "b", "a2"]):
        assert place(spec, usage([node(n) for n in order], [], NOW)).node == "a10"
    # the order this tie-break always had: a name beside a longer one it begins loses to it
    assert place(spec, usage([node("node1"), node("node10")], [], NOW)).node == "node10"
    assert place(spec, usage([node("node10"), node("node1")], [], NOW)).node == "node10"
