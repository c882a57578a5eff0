"""proto.stored: what a value read back from KV must be; a hand-written one that is not is refused."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proto import stored
from proto.errors import ApiError, Code
from proto.migrations import Migration
from proto.nodevmis import NodeVmi
from proto.spec import NetworkAttachment, Taint, Toleration, VMSpec
from proto.state import (
    VM,
    VMI,
    Exposure,
    FloatingIP,
    Lease,
    MigrationPhase,
    MigrationState,
    MigrationTarget,
    Node,
    Phase,
    VMIInterface,
)
from proto.stored import BadStoredValue
from servicekit.store import Bucket

SPEC = VMSpec(name="vm1")
VMI_OK = VMI(name="vm1", uid="0b7c5f4e-1111-4222-8333-444455556666", spec=SPEC, created_at=1.0, node_name="node1",
             interfaces=[VMIInterface(name="default", ip_address="10.244.0.2", ip_addresses=["10.244.0.2"],
                                      mac="02:00:00:00:00:01")])
NODE_OK = Node(name="node1", cpus=2, memory=2**30, kvm=False, heartbeat=1.0, started_at=1.0, address="10.99.0.1",
               pod_cidr="10.244.3.0/24", labels={"kubernetes.io/hostname": "node1"},
               allowed_bridges=["multus-bridge"], free_disk=10 * 2**30)
EXPOSURE_OK = Exposure(vm="vm1", port=80, node_port=30080)
FIP_OK = FloatingIP(address="192.168.200.10", network="provider", vm="vm1")
NET_OK = NetworkAttachment(name="provider", bridge="multus-bridge", subnet="192.168.200.0/24")

def r(value: Any, **change: Any) -> Any:
    return msgspec.structs.replace(value, **change)


GOOD: list[tuple[Any, str, Any]] = [
    (VM, "vm1", VM(spec=SPEC, created_at=1.0)), (VMI, "vm1", VMI_OK), (Node, "node1", NODE_OK),
    (VMI, "vm1", msgspec.structs.replace(VMI_OK, pause_requested=True, pause_generation=3, reboot_requests=2)),
    (Exposure, EXPOSURE_OK.key, EXPOSURE_OK), (FloatingIP, FIP_OK.key, FIP_OK), (NetworkAttachment, "provider", NET_OK),
    (Node, "node1", r(NODE_OK, unschedulable=True, labels={**NODE_OK.labels, "disk": "ssd"},
                      admin_labels={"disk": "ssd"}, taints=[Taint(key="gpu", value="true", effect="NoSchedule")])),
    (str, "nodecidr.3", "node1"), (dict[str, str], "podips.node1", {"vm1": "10.244.0.2"}),
    (dict[str, str], "net.provider", {}), (Lease, "controllers", Lease(holder="s-1234", duration=3.0)),
]


@pytest.mark.parametrize(("kind", "key", "value"), GOOD, ids=[f"{g[0]}-{g[1]}" for g in GOOD])
def test_what_virtbus_writes_passes(kind: Any, key: str, value: Any) -> None:
    assert stored.has_validator(kind)
    stored.validator(kind)(key, value)


BAD: list[tuple[str, Any, str, Any]] = [
    ("VM under another key", VM, "vm2", VM(spec=SPEC, created_at=1.0)),
    ("VM key '/'", VM, "/", VM(spec=SPEC, created_at=1.0)),
    ("VM name with a newline", VM, "vm1", VM(spec=VMSpec(name="vm1\n"), created_at=1.0)),
    ("VMI key '..'", VMI, "..", VMI_OK),
    ("VMI name with a newline", VMI, "vm1", r(VMI_OK, name="vm1\nx")),
    ("VMI uid injecting meta-data", VMI, "vm1", r(VMI_OK, uid="u\nlocal-hostname: evil")),
    ("VMI uid an option", VMI, "vm1", r(VMI_OK, uid="-rf")),
    ("VMI node with a dot", VMI, "vm1", r(VMI_OK, node_name="node1.evil")),
    ("VMI spec of another VM", VMI, "vm1", r(VMI_OK, spec=VMSpec(name="vm2"))),
    ("VMI pod IP with nft", VMI, "vm1", r(VMI_OK, interfaces=[VMIInterface(name="d", ip_address="10.0.0.1; flush")])),
    ("VMI pod IP loopback", VMI, "vm1", r(VMI_OK, interfaces=[VMIInterface(name="d", ip_address="127.0.0.1")])),
    ("VMI MAC", VMI, "vm1", r(VMI_OK, interfaces=[VMIInterface(name="d", mac="02:00:00:00:00:01\n")])),
    ("VMI MAC with text", VMI, "vm1", r(VMI_OK, interfaces=[VMIInterface(name="d", mac="02:00:00:00:00:0g")])),
    ("VMI reason 1 MiB", VMI, "vm1", r(VMI_OK, reason="x" * 2**20)),
    ("VMI pause generation negative", VMI, "vm1", r(VMI_OK, pause_generation=-1)),
    ("VMI reboot requests negative", VMI, "vm1", r(VMI_OK, reboot_requests=-1)),
    ("VMI stop grace negative", VMI, "vm1", r(VMI_OK, stop_grace_period=-1)),
    ("node pod CIDR default", Node, "node1", r(NODE_OK, pod_cidr="default")),
    ("node pod CIDR 0/0", Node, "node1", r(NODE_OK, pod_cidr="0.0.0.0/0")),
    ("node pod CIDR outside the cluster", Node, "node1", r(NODE_OK, pod_cidr="10.99.0.0/24")),
    ("node pod CIDR a /16", Node, "node1", r(NODE_OK, pod_cidr="10.244.0.0/16")),
    ("node address a network", Node, "node1", r(NODE_OK, address="10.99.0.0/24")),
    ("node address with text", Node, "node1", r(NODE_OK, address="10.99.0.1 dev lo")),
    ("node address loopback", Node, "node1", r(NODE_OK, address="127.0.0.1")),
    ("node address leading zeros", Node, "node1", r(NODE_OK, address="010.099.000.001")),
    ("node bridge an option", Node, "node1", r(NODE_OK, allowed_bridges=["-all"])),
    ("node under another key", Node, "node2", NODE_OK),
    ("node admin label not among its labels", Node, "node1", r(NODE_OK, admin_labels={"disk": "ssd"})),
    ("node taint key with nft", Node, "node1", r(NODE_OK, taints=[Taint(key="a; flush ruleset", effect="NoSchedule")])),
    ("node taint effect unknown", Node, "node1", r(NODE_OK, taints=[Taint(key="a", effect="Evict")])),  # type: ignore[arg-type]
    ("VMI toleration Exists with a value", VMI, "vm1", r(VMI_OK, spec=VMSpec(name="vm1", tolerations=[
        Toleration(key="a", operator="Exists", value="b")]))),
    ("exposure protocol with nft", Exposure, EXPOSURE_OK.key,
     r(EXPOSURE_OK, protocol="tcp dport 1 accept; flush ruleset")),
    ("exposure protocol lowercase", Exposure, "nodeport-tcp-30080", r(EXPOSURE_OK, protocol="tcp")),
    ("exposure port 0", Exposure, EXPOSURE_OK.key, r(EXPOSURE_OK, port=0)),
    ("exposure port 70000", Exposure, EXPOSURE_OK.key, r(EXPOSURE_OK, port=70000)),
    ("exposure node port 22", Exposure, "nodeport-tcp-22", r(EXPOSURE_OK, node_port=22)),
    ("exposure under another key", Exposure, "nodeport-tcp-30081", EXPOSURE_OK),
    ("fip address with nft", FloatingIP, FIP_OK.key, r(FIP_OK, address="192.168.200.10 accept")),
    ("fip VM hostile", FloatingIP, FIP_OK.key, r(FIP_OK, vm="../x")),
    ("network bridge vbpods", NetworkAttachment, "provider", r(NET_OK, bridge="vbpods")),
    ("network bridge an option", NetworkAttachment, "provider", r(NET_OK, bridge="-x")),
    ("network loopback", NetworkAttachment, "provider", r(NET_OK, subnet="127.0.0.0/8")),
    ("cidr claim by a hostile node", str, "nodecidr.0", "node1\n"),
    ("cidr claim key", str, "nodecidr.1024", "node1"),
    ("ipam key climbing", dict[str, str], "podips./", {}),
    ("pod IP table with text", dict[str, str], "podips.node1", {"vm1": "10.244.0.2 via 1.1.1.1"}),
    ("pod IP table hostile owner", dict[str, str], "net.provider", {"/": "192.168.200.3"}),
]


@pytest.mark.parametrize(("case", "kind", "key", "value"), BAD, ids=[b[0] for b in BAD])
def test_hostile_stored_values_are_refused(case: str, kind: Any, key: str, value: Any) -> None:
    with pytest.raises(ApiError) as info:
        stored.validator(kind)(key, value)
    assert info.value.code is Code.INVALID and info.value.field


def test_bucket_decode_sets_aside_undecodable_and_invalid_values() -> None:
    bucket: Bucket[Node] = Bucket(object(), Node)  # type: ignore[arg-type]  # decode touches no KV
    good = msgspec.json.encode(NODE_OK)
    assert bucket.decode("node1", good) == NODE_OK
    for key, data, why in [("node1", b"{not json", "does not decode"), ("node1", b'{"name": 1}', "does not decode"),
                           ("node1", msgspec.json.encode(r(NODE_OK, pod_cidr="default")), "pod CIDR"),
                           ("/", good, "DNS-1123")]:
        with pytest.raises(BadStoredValue) as info:
            bucket.decode(key, data)
        assert why in info.value.reason and info.value.key == key


def test_bucket_refuses_to_write_what_a_reader_would_set_aside() -> None:
    bucket: Bucket[Exposure] = Bucket(object(), Exposure)  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        bucket._encode(EXPOSURE_OK.key, r(EXPOSURE_OK, protocol="tcp dport 1 accept; flush ruleset"))


def test_what_the_launcher_reports_passes() -> None:
    """A spec's MAC in capitals and a long libvirt error are what our own writers store."""
    nic = VMIInterface(name="default", ip_address="192.168.100.2", mac="02:AB:CD:00:00:01")
    stored.check_vmi("vm1", r(VMI_OK, interfaces=[nic], reason="launch failed: " + "x" * 8000))


def test_a_bucket_of_a_type_without_rules_cannot_be_made() -> None:
    with pytest.raises(TypeError):
        Bucket(object(), list[int])  # type: ignore[arg-type]


def _migrating(target: MigrationTarget | None = None, **state: Any) -> VMI:
    fields: dict[str, Any] = {"migration_uid": "m1", "migration_name": "mig", "source_node": "node1",
                              "phase": MigrationPhase.TARGET_READY, "start_timestamp": 1.0, "target_node": "node2",
                              "target": target, **state}
    return VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, phase=Phase.RUNNING,
               node_name="node1", migration_state=MigrationState(**fields))


GOOD_TARGET = MigrationTarget(address="10.99.0.12", port=40000, node_dir="/var/lib/virtbus/nodes/n2")


def test_a_migrating_instance_is_copied_to_its_source_and_its_target_only() -> None:
    vmi = _migrating(GOOD_TARGET)
    stored.validator(NodeVmi)("node1.vm1", NodeVmi(vmi=vmi, revision=3))
    stored.validator(NodeVmi)("node2.vm1", NodeVmi(vmi=vmi, revision=3))
    with pytest.raises(ApiError):
        stored.validator(NodeVmi)("node3.vm1", NodeVmi(vmi=vmi, revision=3))


@pytest.mark.parametrize("target", [
    msgspec.structs.replace(GOOD_TARGET, node_dir="/x'/><disk"),
    msgspec.structs.replace(GOOD_TARGET, node_dir="relative"),
    msgspec.structs.replace(GOOD_TARGET, port=0),
    msgspec.structs.replace(GOOD_TARGET, address="not-an-ip"),
])
def test_a_migration_target_written_by_hand_that_would_reach_xml_or_a_socket_is_set_aside(
        target: MigrationTarget) -> None:
    stored.validator(VMI)("vm1", _migrating(GOOD_TARGET))
    with pytest.raises(ApiError):
        stored.validator(VMI)("vm1", _migrating(target))
    with pytest.raises(ApiError):
        stored.validator(VMI)("vm1", _migrating(GOOD_TARGET, target_node="../x"))


def test_a_migration_record_is_held_to_the_apis_rules() -> None:
    good = Migration(name="mig", uid="m1", vmi_name="vm1", created_at=1.0, source_node="node1")
    stored.validator(Migration)("mig", good)
    for key, bad in (("other", good), ("mig", msgspec.structs.replace(good, vmi_name="a/b")),
                     ("mig", msgspec.structs.replace(good, reason="x" * (stored.MAX_TEXT + 1))),
                     ("mig", msgspec.structs.replace(good, labels={"bad key!": "x"}))):
        with pytest.raises(ApiError):
            stored.validator(Migration)(key, bad)
