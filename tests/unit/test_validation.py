"""Each rule of proto.validation: a spec it accepts, and one it refuses with the field to blame."""

from typing import Any

import msgspec
import pytest

from proto.errors import ApiError, Code
from proto.spec import (
    CloudInitNoCloud,
    ContainerDisk,
    Cpu,
    Disk,
    EmptyDisk,
    Interface,
    Network,
    NetworkAttachment,
    Port,
    VMSpec,
    Volume,
)
from proto.validation import validate_image_reference, validate_network, validate_vm

BASE = VMSpec(
    name="vm-1",
    memory="64Mi",
    disks=[Disk(name="root"), Disk(name="cloudinit")],
    volumes=[Volume(name="root", source=ContainerDisk(image="quay.io/kubevirt/cirros-container-disk-demo")),
             Volume(name="cloudinit", source=CloudInitNoCloud(user_data="#cloud-config\n"))],
    interfaces=[Interface(name="default", binding="masquerade"), Interface(name="ext", binding="bridge")],
    networks=[Network(name="default"), Network(name="ext", kind="multus", network_name="multus-br")],
)


def with_(**change: Any) -> VMSpec:
    return msgspec.structs.replace(BASE, **change)


def volume(source: Any) -> VMSpec:
    return with_(volumes=[Volume(name="root", source=source), BASE.volumes[1]])


def nic(**change: Any) -> VMSpec:
    return with_(interfaces=[msgspec.structs.replace(BASE.interfaces[0], **change), BASE.interfaces[1]])


def ports(*items: tuple[int, str]) -> VMSpec:
    return nic(ports=[Port(port=port, protocol=protocol) for port, protocol in items])  # type: ignore[arg-type]


def test_base_is_valid() -> None:
    assert validate_vm(BASE) is BASE


# (rule, an accepted spec, a refused spec, the field blamed)
RULES: list[tuple[str, VMSpec, VMSpec, str]] = [
    ("name is a DNS-1123 label", with_(name="a" * 63), with_(name="VM_1"), "spec.name"),
    ("name at most 63", with_(name="a-b-0"), with_(name="a" * 64), "spec.name"),
    ("name no dots", with_(name="x9"), with_(name="a.b"), "spec.name"),
    ("memory parses", with_(memory="1.5Gi"), with_(memory="lots"), "spec.memory"),
    ("memory at least 16Mi", with_(memory="16Mi"), with_(memory="16M"), "spec.memory"),
    ("memory at most 256Gi", with_(memory="256Gi"), with_(memory="257Gi"), "spec.memory"),
    ("cores at least 1", with_(cpu=Cpu(cores=4)), with_(cpu=Cpu(cores=0)), "spec.cpu.cores"),
    ("sockets at least 1", with_(cpu=Cpu(sockets=2)), with_(cpu=Cpu(sockets=-1)), "spec.cpu.sockets"),
    ("threads at least 1", with_(cpu=Cpu(threads=2)), with_(cpu=Cpu(threads=0)), "spec.cpu.threads"),
    ("at most 64 vCPUs", with_(cpu=Cpu(cores=8, sockets=4, threads=2)), with_(cpu=Cpu(cores=65)), "spec.cpu"),
    ("grace period 0..3600", with_(termination_grace_period_seconds=3600),
     with_(termination_grace_period_seconds=-1), "spec.terminationGracePeriodSeconds"),
    ("grace period at most 3600", with_(termination_grace_period_seconds=0),
     with_(termination_grace_period_seconds=3601), "spec.terminationGracePeriodSeconds"),
    ("label syntax", with_(labels={"kubevirt.io/size": "small", "app": "", "a.b_c-d": "X.y_z-0"}),
     with_(labels={"bad key": "x"}), "spec.labels"),
    ("label prefix is a subdomain", with_(labels={"example.com/a": "b"}), with_(labels={"Example.com/a": "b"}),
     "spec.labels"),
    ("label value syntax", with_(labels={"a": "b" * 63}), with_(labels={"a": "b" * 64}), "spec.labels"),
    ("label value ends alphanumeric", with_(labels={"a": "b1"}), with_(labels={"a": "b-"}), "spec.labels"),
    ("node selector syntax", with_(node_selector={"kubernetes.io/hostname": "node-1"}),
     with_(node_selector={"/x": "y"}), "spec.nodeSelector"),
    ("disk has a volume", BASE, with_(disks=[*BASE.disks, Disk(name="data")]), "spec.disks[2].name"),
    ("volume has a disk", BASE, with_(disks=BASE.disks[:1]), "spec.volumes[1].name"),
    ("disk names unique", BASE, with_(disks=[*BASE.disks, Disk(name="root")]), "spec.disks[2].name"),
    ("disk names are labels", BASE, with_(disks=[Disk(name="Root"), BASE.disks[1]]), "spec.disks[0].name"),
    ("volume names unique", BASE, with_(volumes=[*BASE.volumes, BASE.volumes[0]]), "spec.volumes[2].name"),
    ("boot order at least 1", with_(disks=[Disk(name="root", boot_order=1), Disk(name="cloudinit", boot_order=2)]),
     with_(disks=[Disk(name="root", boot_order=0), BASE.disks[1]]), "spec.disks[0].bootOrder"),
    ("boot order unique", BASE, with_(disks=[Disk(name="root", boot_order=1), Disk(name="cloudinit", boot_order=1)]),
     "spec.disks[1].bootOrder"),
    ("image reference", volume(ContainerDisk(image="registry:5000/a/b_c.d-e:v1.2@sha256:0af3")),
     volume(ContainerDisk(image="Quay.io/x")), "spec.volumes[0].source.image"),
    ("image without ..", volume(ContainerDisk(image="a.b/c")), volume(ContainerDisk(image="a/../b")),
     "spec.volumes[0].source.image"),
    ("image no leading /", volume(ContainerDisk(image="b")), volume(ContainerDisk(image="/etc/passwd")),
     "spec.volumes[0].source.image"),
    ("image no leading -", volume(ContainerDisk(image="x-")), volume(ContainerDisk(image="-x")),
     "spec.volumes[0].source.image"),
    ("image at most 255", volume(ContainerDisk(image="a" * 255)), volume(ContainerDisk(image="a" * 256)),
     "spec.volumes[0].source.image"),
    ("image charset", volume(ContainerDisk(image="a:b")), volume(ContainerDisk(image="a;rm -rf")),
     "spec.volumes[0].source.image"),
    ("emptyDisk capacity parses", volume(EmptyDisk(capacity="10Gi")), volume(EmptyDisk(capacity="ten")),
     "spec.volumes[0].source.capacity"),
    ("emptyDisk at least 1Mi", volume(EmptyDisk(capacity="1Mi")), volume(EmptyDisk(capacity="1M")),
     "spec.volumes[0].source.capacity"),
    ("emptyDisk at most 2Ti", volume(EmptyDisk(capacity="2Ti")), volume(EmptyDisk(capacity="3Ti")),
     "spec.volumes[0].source.capacity"),
    ("userData at most 64 KiB", volume(CloudInitNoCloud(user_data="x" * 65536)),
     volume(CloudInitNoCloud(user_data="x" * 65537)), "spec.volumes[0].source.userData"),
    ("networkData at most 64 KiB", volume(CloudInitNoCloud(network_data="x" * 65536)),
     volume(CloudInitNoCloud(user_data="x", network_data="é" * 40000)), "spec.volumes[0].source.networkData"),
    ("cloud-init has content", volume(CloudInitNoCloud(network_data="version: 2")),
     volume(CloudInitNoCloud()), "spec.volumes[0].source"),
    ("interface has a network", BASE, with_(networks=BASE.networks[:1]), "spec.interfaces[1].name"),
    ("network has an interface", BASE, with_(interfaces=BASE.interfaces[:1]), "spec.networks[1].name"),
    ("interface names unique", BASE, with_(interfaces=[*BASE.interfaces, BASE.interfaces[0]]),
     "spec.interfaces[2].name"),
    ("network names unique", BASE, with_(networks=[*BASE.networks, BASE.networks[0]]), "spec.networks[2].name"),
    ("network names are labels", BASE,
     with_(networks=[BASE.networks[0], Network(name="ext_1", kind="multus", network_name="x")]),
     "spec.networks[1].name"),
    ("at most one pod network", BASE, with_(networks=[BASE.networks[0], Network(name="ext")]), "spec.networks[1].kind"),
    ("bridge on the pod network", with_(interfaces=[Interface(name="default", binding="bridge"), BASE.interfaces[1]]),
     with_(interfaces=[BASE.interfaces[0], Interface(name="ext", binding="masquerade")]), "spec.interfaces[1].binding"),
    ("multus networkName is a label", BASE,
     with_(networks=[BASE.networks[0], Network(name="ext", kind="multus", network_name="ns/net")]),
     "spec.networks[1].networkName"),
    ("multus needs a networkName", BASE, with_(networks=[BASE.networks[0], Network(name="ext", kind="multus")]),
     "spec.networks[1].networkName"),
    ("pod network has no networkName", BASE,
     with_(networks=[Network(name="default", network_name="x"), BASE.networks[1]]), "spec.networks[0].networkName"),
    ("MAC syntax", nic(mac_address="02:AB:cd:00:00:01"), nic(mac_address="02-00-00-00-00-01"),
     "spec.interfaces[0].macAddress"),
    ("MAC unicast", nic(mac_address="52:54:00:12:34:56"), nic(mac_address="01:00:5e:00:00:01"),
     "spec.interfaces[0].macAddress"),
    ("MAC not zero", nic(mac_address="00:00:00:00:00:01"), nic(mac_address="00:00:00:00:00:00"),
     "spec.interfaces[0].macAddress"),
    ("MAC unique", nic(mac_address="02:00:00:00:00:01"),
     with_(interfaces=[Interface(name="default", binding="masquerade", mac_address="02:00:00:00:00:01"),
                       Interface(name="ext", binding="bridge", mac_address="02:00:00:00:00:01")]),
     "spec.interfaces[1].macAddress"),
    ("port at least 1", ports((1, "TCP")), ports((0, "TCP")), "spec.interfaces[0].ports[0].port"),
    ("port at most 65535", ports((65535, "TCP")), ports((80, "TCP"), (65536, "TCP")),
     "spec.interfaces[0].ports[1].port"),
    ("ports unique per protocol", ports((53, "TCP"), (53, "UDP")), ports((53, "UDP"), (53, "UDP")),
     "spec.interfaces[0].ports[1].port"),
    ("port names", nic(ports=[Port(port=80, name="http")]), nic(ports=[Port(port=80, name="HTTP")]),
     "spec.interfaces[0].ports[0].name"),
]


@pytest.mark.parametrize(("rule", "accepted", "refused", "field"), RULES, ids=[r[0] for r in RULES])
def test_rule(rule: str, accepted: VMSpec, refused: VMSpec, field: str) -> None:
    assert validate_vm(accepted) is accepted
    with pytest.raises(ApiError) as err:
        validate_vm(refused)
    assert (err.value.code, err.value.field) == (Code.INVALID, field), err.value


def test_impossible_sizes_say_so() -> None:
    with pytest.raises(ApiError, match="between 16Mi and 256Gi"):
        validate_vm(with_(memory="1Ei"))


NET = NetworkAttachment(name="net-1", bridge="br-net1", subnet="192.168.100.0/24")


def att(**change: Any) -> NetworkAttachment:
    return msgspec.structs.replace(NET, **change)


NETWORK_RULES: list[tuple[str, NetworkAttachment, NetworkAttachment, str]] = [
    ("name is a label", att(name="n"), att(name="Net"), "spec.name"),
    ("bridge is an interface name", att(bridge="a" * 15), att(bridge="a" * 16), "spec.bridge"),
    ("bridge charset", att(bridge="br_0.1-x"), att(bridge="br 0"), "spec.bridge"),
    ("bridge not . or ..", att(bridge="br.100"), att(bridge=".."), "spec.bridge"),
    ("bridge not empty", att(bridge="b"), att(bridge=""), "spec.bridge"),
    ("subnet is an IPv4 network", att(subnet="10.0.0.0/8"), att(subnet="fd00::/64"), "spec.subnet"),
    ("subnet has no host bits", att(subnet="10.1.2.0/24"), att(subnet="10.1.2.3/24"), "spec.subnet"),
    ("prefix at least /8", att(subnet="10.0.0.0/8"), att(subnet="10.0.0.0/7"), "spec.subnet"),
    ("prefix at most /30", att(subnet="10.0.0.0/30"), att(subnet="10.0.0.0/31"), "spec.subnet"),
    ("gateway inside", att(gateway="192.168.100.1"), att(gateway="192.168.101.1"), "spec.gateway"),
    ("gateway a host", att(gateway="192.168.100.254"), att(gateway="192.168.100.255"), "spec.gateway"),
    ("gateway an address", att(gateway="192.168.100.9"), att(gateway="gw"), "spec.gateway"),
    ("range start inside", att(range_start="192.168.100.10"), att(range_start="10.0.0.1"), "spec.rangeStart"),
    ("range end inside", att(range_end="192.168.100.20"), att(range_end="192.168.100.0"), "spec.rangeEnd"),
    ("range in order", att(range_start="192.168.100.10", range_end="192.168.100.10"),
     att(range_start="192.168.100.11", range_end="192.168.100.10"), "spec.rangeEnd"),
]


@pytest.mark.parametrize(("rule", "accepted", "refused", "field"), NETWORK_RULES, ids=[r[0] for r in NETWORK_RULES])
def test_network_rule(rule: str, accepted: NetworkAttachment, refused: NetworkAttachment, field: str) -> None:
    assert validate_network(accepted) is accepted
    with pytest.raises(ApiError) as err:
        validate_network(refused)
    assert (err.value.code, err.value.field) == (Code.INVALID, field), err.value


@pytest.mark.parametrize(("ref", "ok"), [
    ("quay.io/kubevirt/cirros-container-disk-demo", True), ("cirros", True), ("a/b@sha256:ab12", True),
    ("", False), ("a b", False), ("a/../../b", False), ("a//b", False), (".hidden", False), ("a$b", False),
])
def test_image_reference(ref: str, ok: bool) -> None:
    if ok:
        validate_image_reference(ref, field="name")
        return
    with pytest.raises(ApiError) as err:
        validate_image_reference(ref, field="name")
    assert (err.value.code, err.value.field) == (Code.INVALID, "name")
