"""What ``virtbus delete -f`` deletes from a file: each object by its kind and name, last first, and
those it cannot delete each as its own error in its place; and the NAD a stored network reads back as."""

from __future__ import annotations

import pytest

from ctl.manifestcmd import deletions
from proto.errors import ApiError, Code
from proto.manifest import load_manifests
from proto.nad import nad_object, network_from_nad
from proto.spec import NetworkAttachment
from tests.conftest import REPO


def docs(*names: str) -> list[object]:
    return [d for n in names for d in load_manifests((REPO / "examples" / n).read_bytes())]


def test_every_example_kind_is_deleted_by_its_name_last_first() -> None:
    got = deletions(docs("multus-br.yaml", "testvm-2-secondary.yaml", "testvm-service.yaml", "route-testvm.yaml",
                         "testvmi.yaml", "testvmirs.yaml", "testvmpool.yaml", "instancetype-tiny.yaml",
                         "preference-virtio.yaml", "testvm-snapshot.yaml"))
    assert got == [("vmsnapshot", "keeper-snap"), ("preference", "virtio-cores"), ("instancetype", "tiny"),
                   ("vmpool", "vm-pool-cirros"), ("vmirs", "testreplicaset"), ("vmi", "testvmi"),
                   ("route", "testvm"), ("service", "testvm-http"), ("vm", "testvm-2"), ("network", "multus-br")]


def test_kinds_it_cannot_delete_are_errors_in_their_place() -> None:
    got = deletions([*docs("kubevirt-cr.yaml", "testvm-restore.yaml"), {"kind": "Pod", "metadata": {"name": "p"}},
                     {"kind": "VirtualMachine", "metadata": {}}, "text", {"name": "plain-json-vm"}])
    assert got[0] == ("vm", "plain-json-vm")  # virtbus JSON: no kind, a VM by its name
    errors = got[1:]
    assert all(isinstance(e, ApiError) and e.code is Code.BAD_REQUEST for e in errors)
    messages = [e.message for e in errors if isinstance(e, ApiError)]
    assert "not an object" in messages[0] and "no metadata.name" in messages[1]
    assert "no kind 'Pod'" in messages[2]
    assert messages[3].startswith("VirtualMachineRestore ") and "nothing left of it to delete" in messages[3]
    assert messages[4].startswith("KubeVirt ") and "configuration" in messages[4]


@pytest.mark.parametrize("net", [
    NetworkAttachment(name="multus-br", bridge="multus-bridge", subnet="192.168.100.0/24"),
    NetworkAttachment(name="l2", bridge="multus-bridge"),
    NetworkAttachment(name="ovs", bridge="br1", type="ovs", vlan=100, subnet="10.10.0.0/24", gateway="10.10.0.254",
                      range_start="10.10.0.10", range_end="10.10.0.20"),
])
def test_a_network_reads_back_as_a_nad_that_applies_as_the_same_network(net: NetworkAttachment) -> None:
    printed = nad_object(net)
    assert printed["kind"] == "NetworkAttachmentDefinition" and printed["metadata"]["name"] == net.name
    assert network_from_nad(printed) == net


def test_every_example_network_reads_back_as_itself() -> None:
    for doc in docs("multus-br.yaml", "multus-br-vlan.yaml", "ovs-net-br1.yaml", "provider-l2.yaml"):
        assert isinstance(doc, dict)
        net = network_from_nad(doc)
        assert network_from_nad(nad_object(net)) == net
