"""Limits: per VM disks, NICs and emptyDisk total (refused naming the field); per node, emptyDisks
that would not fit its free disk make it unfit."""

from __future__ import annotations

import pytest

from launcher.disks import check_disk_room
from proto.errors import ApiError, Code
from proto.manifest import load_manifests
from proto.quantity import parse_bytes
from proto.spec import Disk, EmptyDisk, Interface, Network, NetworkAttachment, VMSpec, Volume
from proto.state import VMI, Node, Phase
from proto.validation import MAX_DISKS, MAX_INTERFACES, validate_network, validate_vm
from scheduler import placement


def disks(n: int, capacity: str = "1Gi") -> VMSpec:
    return VMSpec(name="vm", disks=[Disk(name=f"d{i}") for i in range(n)],
                  volumes=[Volume(name=f"d{i}", source=EmptyDisk(capacity=capacity)) for i in range(n)])


def nics(n: int) -> VMSpec:
    return VMSpec(name="vm", interfaces=[Interface(name=f"n{i}", binding="bridge") for i in range(n)],
                  networks=[Network(name=f"n{i}", kind="multus", network_name="net") for i in range(n)])


def refused(spec: VMSpec) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate_vm(spec)
    assert info.value.code is Code.INVALID
    return info.value


def test_disks_up_to_the_cap() -> None:
    validate_vm(disks(MAX_DISKS))
    assert refused(disks(MAX_DISKS + 1)).field == "spec.disks"
    assert refused(disks(40)).field == "spec.disks"  # 40 gave a target "vd{" before


def test_nics_up_to_the_cap() -> None:
    validate_vm(nics(MAX_INTERFACES))
    assert refused(nics(MAX_INTERFACES + 1)).field == "spec.interfaces"


def test_emptydisks_add_up_to_at_most_2ti() -> None:
    validate_vm(disks(2, "1Ti"))
    error = refused(disks(3, "1Ti"))
    assert error.field == "spec.volumes[2].source.capacity" and "add up" in error.message


@pytest.mark.parametrize(("bridge", "subnet", "field"), [
    ("vbpods", "192.168.1.0/24", "spec.bridge"), ("-x", "192.168.1.0/24", "spec.bridge"),
    ("br\n", "192.168.1.0/24", "spec.bridge"), ("br0", "127.0.0.0/8", "spec.subnet"),
    ("br0", "169.254.0.0/16", "spec.subnet"), ("br0", "224.0.0.0/8", "spec.subnet"),
])
def test_networks_keep_off_the_pod_bridge_and_reserved_ranges(bridge: str, subnet: str, field: str) -> None:
    with pytest.raises(ApiError) as info:
        validate_network(NetworkAttachment(name="n", bridge=bridge, subnet=subnet))
    assert info.value.field == field


def node(name: str, free: int | None) -> Node:
    return Node(name=name, cpus=8, memory=parse_bytes("8Gi"), kvm=False, heartbeat=100.0, started_at=0.0,
                free_disk=free)


ALL_READY = {"full": True, "roomy": True, "old": True}


def test_emptydisks_must_fit_the_nodes_free_disk() -> None:
    spec = disks(1, "10Gi")
    running = VMI(name="old", uid="u", spec=disks(1, "15Gi"), created_at=0.0, phase=Phase.RUNNING, node_name="full")
    nodes = [node("full", parse_bytes("20Gi")), node("roomy", parse_bytes("20Gi"))]
    choice = placement.place(spec, placement.usage(nodes, [running], ALL_READY))
    assert choice.node == "roomy"
    choice = placement.place(disks(1, "30Gi"), placement.usage(nodes, [running], ALL_READY))
    assert choice.node is None and "Insufficient disk" in choice.message
    # a node that does not report its free disk (an older handler) is not refused for it
    assert placement.place(disks(1, "30Gi"), placement.usage([node("old", None)], [], ALL_READY)).node == "old"


def test_the_cli_loader_refuses_aliases_and_reads_every_document() -> None:
    assert load_manifests(b"a: 1\n---\nb: 2\n") == [{"a": 1}, {"b": 2}]
    with pytest.raises(ApiError) as info:
        load_manifests(b"a: &x [1, 2]\nb: [*x, *x]\n")
    assert info.value.code is Code.BAD_REQUEST and "aliases" in info.value.message


def test_the_launcher_refuses_emptydisks_the_node_cannot_hold() -> None:
    check_disk_room(disks(2, "1Gi"), parse_bytes("2Gi"))
    check_disk_room(VMSpec(name="vm"), 0)  # no emptyDisk, no need
    with pytest.raises(ApiError) as info:
        check_disk_room(disks(2, "1Gi"), parse_bytes("2Gi") - 1)
    assert info.value.field == "spec.volumes" and "need 2Gi" in info.value.message
