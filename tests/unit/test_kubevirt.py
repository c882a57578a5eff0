"""The seed manifests convert as they are; what virtbus cannot honour is refused by field path.

Also the manifest entry (proto.manifest): JSON or one YAML document, and the native virtbus/v1 form.
"""

import base64
import copy
import json
from typing import Any

import pytest
import yaml

from proto.errors import ApiError, Code
from proto.manifest import parse_manifest, parse_manifest_obj
from proto.spec import (
    CloudInitNoCloud,
    ContainerDisk,
    Cpu,
    EmptyDisk,
    NetworkAttachment,
    RunStrategy,
    VMSpec,
    claims,
)
from tests.conftest import EXAMPLES, REPO


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(doc, dict)
    return doc


def vm(doc: object) -> VMSpec:
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec)
    return spec


def refused(doc: object) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(doc)
    return err.value


def test_testvm_masquerade() -> None:
    vm = parse_manifest((EXAMPLES / "testvm-masquerade.yaml").read_bytes())
    assert isinstance(vm, VMSpec)
    assert (vm.name, vm.run_strategy, vm.memory) == ("testvm", RunStrategy.HALTED, "64M")
    assert [(d.name, d.bus) for d in vm.disks] == [("containerdisk", "virtio"), ("cloudinitdisk", "virtio")]
    assert [(i.name, i.binding) for i in vm.interfaces] == [("default", "masquerade")]
    assert [(n.name, n.kind) for n in vm.networks] == [("default", "pod")]
    assert vm.volumes[0].source == ContainerDisk(image="quay.io/kubevirt/cirros-container-disk-demo")
    assert vm.volumes[1].source == CloudInitNoCloud(user_data="Hi.\\n")  # base64 of the 5 bytes `Hi.\n`
    assert vm.labels == {"kubevirt.io/size": "small", "kubevirt.io/domain": "testvm"}
    assert (vm.cpu, vm.node_selector) == (Cpu(), {})


def test_testvm_2_secondary() -> None:
    vm = parse_manifest((EXAMPLES / "testvm-2-secondary.yaml").read_bytes())
    assert isinstance(vm, VMSpec)
    assert vm.name == "testvm-2"
    assert [(i.name, i.binding) for i in vm.interfaces] == [("default", "masquerade"), ("ext-net", "bridge")]
    assert [(n.name, n.kind, n.network_name) for n in vm.networks] == [
        ("default", "pod", None), ("ext-net", "multus", "multus-br")]


def test_multus_network_attachment() -> None:
    net = parse_manifest((EXAMPLES / "multus-br.yaml").read_bytes())
    assert net == NetworkAttachment(name="multus-br", bridge="multus-bridge", subnet="192.168.100.0/24")


def test_json_and_yaml_agree() -> None:
    doc = load("testvm-masquerade.yaml")
    from_yaml = parse_manifest((EXAMPLES / "testvm-masquerade.yaml").read_bytes(), content_type="yaml")
    assert parse_manifest(json.dumps(doc).encode(), content_type="application/json") == from_yaml


@pytest.mark.parametrize(("change", "strategy"), [
    ({"running": True}, RunStrategy.ALWAYS), ({"running": False}, RunStrategy.HALTED), ({}, RunStrategy.HALTED),
    ({"runStrategy": "RerunOnFailure"}, RunStrategy.RERUN_ON_FAILURE), ({"runStrategy": "Manual"}, RunStrategy.MANUAL),
    ({"runStrategy": "Once"}, RunStrategy.ONCE),
])
def test_running_and_run_strategy(change: dict[str, Any], strategy: RunStrategy) -> None:
    doc = load("testvm-masquerade.yaml")
    del doc["spec"]["running"]
    doc["spec"].update(change)
    assert vm(doc).run_strategy is strategy


def test_everything_virtbus_honours() -> None:
    doc = load("testvm-2-secondary.yaml")
    doc["metadata"].update(namespace="default", uid="u-1", resourceVersion="7", generation=2,
                           creationTimestamp="2024-01-01T00:00:00Z", annotations={"a": "b"}, labels={"vm": "x"})
    doc["status"] = {"printableStatus": "Stopped"}
    tspec = doc["spec"]["template"]["spec"]
    tspec["domain"]["cpu"] = {"cores": 2, "sockets": 1, "threads": 2}
    tspec["domain"]["resources"]["limits"] = {"memory": "128Mi"}
    tspec["domain"]["devices"]["disks"][0].update(bootOrder=1, disk={"bus": "sata"})
    tspec["domain"]["devices"]["disks"].append({"name": "scratch"})  # no disk: key: a virtio disk
    tspec["domain"]["devices"]["interfaces"][0].update(macAddress="02:00:00:00:00:01", model="e1000", ports=[
        {"port": 80}, {"port": 53, "protocol": "UDP", "name": "dns"}])
    tspec["volumes"][0]["containerDisk"]["imagePullPolicy"] = "Always"
    tspec["volumes"].append({"name": "scratch", "emptyDisk": {"capacity": "1Gi"}})
    tspec["volumes"][1]["cloudInitNoCloud"] = {"userData": "#cloud-config\n", "networkDataBase64":
                                               base64.b64encode(b"version: 2\n").decode()}
    tspec.update(nodeSelector={"kubernetes.io/hostname": "node-1"}, terminationGracePeriodSeconds=0,
                 architecture="amd64")  # what KubeVirt writes into a VMI it defaults: the only one there is
    spec = vm(doc)
    assert spec.cpu == Cpu(cores=2, sockets=1, threads=2)
    assert spec.labels == {"kubevirt.io/size": "small", "kubevirt.io/domain": "testvm-2"}  # the template's
    assert [(d.name, d.bus, d.boot_order) for d in spec.disks][::2] == [("containerdisk", "sata", 1),
                                                                       ("scratch", "virtio", None)]
    iface = spec.interfaces[0]
    assert (iface.mac_address, iface.model, [(p.port, p.protocol, p.name) for p in iface.ports]) == (
        "02:00:00:00:00:01", "e1000", [(80, "TCP", None), (53, "UDP", "dns")])
    assert spec.volumes[1].source == CloudInitNoCloud(user_data="#cloud-config\n", network_data="version: 2\n")
    assert spec.volumes[2].source == EmptyDisk(capacity="1Gi")
    assert (spec.node_selector, spec.termination_grace_period_seconds) == ({"kubernetes.io/hostname": "node-1"}, 0)


def test_memory_from_guest_or_limits() -> None:
    doc = load("testvm-masquerade.yaml")
    domain = doc["spec"]["template"]["spec"]["domain"]
    domain["resources"] = {"limits": {"memory": "128Mi"}}
    assert vm(doc).memory == "128Mi"  # Kubernetes defaults requests to limits
    domain.pop("resources")
    domain["memory"] = {"guest": 134217728}
    assert vm(doc).memory == "134217728"


def test_yaml_nulls_read_as_empty_objects() -> None:
    text = (EXAMPLES / "testvm-masquerade.yaml").read_text().replace("pod: {}", "pod:")
    spec = parse_manifest(text.encode())
    assert isinstance(spec, VMSpec) and spec.networks[0].kind == "pod"


def mutated(path: list[str | int], value: Any, name: str = "testvm-masquerade.yaml") -> dict[str, Any]:
    doc = copy.deepcopy(load(name))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
TS = ["spec", "template", "spec"]
DOM = [*TS, "domain"]
DEV = [*DOM, "devices"]
T2 = "testvm-2-secondary.yaml"
REFUSED = [
    # not supported by virtbus: the full path of the field
    (mutated([*DEV, "gpus"], [{"name": "g"}]), Code.INVALID, "spec.template.spec.domain.devices.gpus"),
    (mutated([*DEV, "watchdog"], {"name": "w", "i6300esb": {}}), Code.INVALID,
     "spec.template.spec.domain.devices.watchdog"),
    (mutated([*DEV, "rng"], {"source": "/dev/random"}), Code.INVALID, "spec.template.spec.domain.devices.rng.source"),
    (mutated([*TS, "volumes", 0, "hostDisk"], {"path": "/x", "type": "Disk"}), Code.INVALID,
     "spec.template.spec.volumes[0]"),  # two sources
    (mutated([*DEV, "disks", 1, "cdrom"], {"bus": "sata"}), Code.INVALID,
     "spec.template.spec.domain.devices.disks[1].cdrom"),
    (mutated([*DEV, "disks", 0, "lun"], {}), Code.INVALID, "spec.template.spec.domain.devices.disks[0].lun"),
    (mutated([*DEV, "disks", 0, "disk", "bus"], "usb"), Code.INVALID,
     "spec.template.spec.domain.devices.disks[0].disk.bus"),
    (mutated([*DEV, "interfaces", 0, "sriov"], {}), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].sriov"),
    (mutated([*DEV, "interfaces", 0, "model"], "rtl8139"), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].model"),
    (mutated([*DEV, "interfaces", 0, "ports"], [{"port": 132, "protocol": "SCTP"}]), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].ports[0].protocol"),
    (mutated([*DOM, "resources", "requests", "cpu"], "2"), Code.INVALID,
     "spec.template.spec.domain.resources.requests.cpu"),
    (mutated([*TS, "tolerations"], [{"key": "a", "operator": "Exists", "value": "b"}]), Code.INVALID,
     "spec.template.spec.tolerations[0].value"),
    (mutated([*TS, "architecture"], "arm64"), Code.INVALID, "spec.template.spec.architecture"),
    (mutated([*TS, "schedulerName"], "custom"), Code.INVALID, "spec.template.spec.schedulerName"),
    (mutated([*TS, "affinity"], {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": "kubernetes.io/hostname",
         "namespaceSelector": {}}]}}), Code.INVALID,
     "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector"),
    (mutated(["spec", "dataVolumeTemplates"], [{"metadata": {"name": "d"}, "spec": {
        "source": {"http": {"url": "http://x"}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}]),
     Code.INVALID, "spec.dataVolumeTemplates[0].spec.source.http"),
    (mutated(["metadata", "generateName"], "vm-"), Code.INVALID, "metadata.generateName"),
    (mutated([*TS, "networks", 0, "pod", "vmNetworkCIDR"], "10.0.0.0/24"), Code.INVALID,
     "spec.template.spec.networks[0].pod.vmNetworkCIDR"),
    (mutated(["spec", "runStrategy"], "Sometimes"), Code.INVALID, "spec.runStrategy"),
    (mutated(["kind"], "VirtualMachineInstance"), Code.INVALID, "kind"),
    (mutated(["apiVersion"], "kubevirt.io/v2"), Code.BAD_REQUEST, "apiVersion"),
    # wrong types
    (mutated(["spec", "running"], "yes"), Code.BAD_REQUEST, "spec.running"),
    (mutated([*DOM, "cpu", ], {"cores": "2"}), Code.BAD_REQUEST, "spec.template.spec.domain.cpu.cores"),
    (mutated([*DEV, "disks"], "containerdisk"), Code.BAD_REQUEST, "spec.template.spec.domain.devices.disks"),
    (mutated([*TS, "domain"], []), Code.BAD_REQUEST, "spec.template.spec.domain"),
    (mutated([*TS, "nodeSelector"], {"zone": 1}), Code.BAD_REQUEST, "spec.template.spec.nodeSelector"),
    (mutated([*DOM, "resources", "requests", "memory"], 6.4), Code.BAD_REQUEST,
     "spec.template.spec.domain.resources.requests.memory"),
    # structure KubeVirt requires
    (mutated([*DOM, "resources"], DELETE), Code.INVALID, "spec.template.spec.domain.resources.requests.memory"),
    (mutated(["metadata", "name"], DELETE), Code.INVALID, "metadata.name"),
    (mutated(["spec", "template"], DELETE), Code.INVALID, "spec.template"),
    (mutated([*DEV, "disks", 0, "name"], DELETE), Code.INVALID, "spec.template.spec.domain.devices.disks[0].name"),
    (mutated([*DEV, "interfaces", 0, "masquerade"], DELETE), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0]"),
    (mutated([*TS, "networks", 0, "multus"], {"networkName": "x"}), Code.INVALID, "spec.template.spec.networks[0]"),
    (mutated([*TS, "volumes", 1, "cloudInitNoCloud", "userData"], "#cloud-config"), Code.INVALID,
     "spec.template.spec.volumes[1].cloudInitNoCloud.userDataBase64"),
    (mutated([*TS, "volumes", 1, "cloudInitNoCloud", "userDataBase64"], "%%%"), Code.INVALID,
     "spec.template.spec.volumes[1].cloudInitNoCloud.userDataBase64"),
    # a non-ASCII character: b64decode raises ValueError, not binascii.Error (found by hypothesis)
    (mutated([*TS, "volumes", 1, "cloudInitNoCloud", "userDataBase64"], "\u0080"), Code.INVALID,
     "spec.template.spec.volumes[1].cloudInitNoCloud.userDataBase64"),
    (mutated([*TS, "volumes", 1, "cloudInitNoCloud", "userDataBase64"], "/w=="), Code.INVALID,
     "spec.template.spec.volumes[1].cloudInitNoCloud.userDataBase64"),
    (mutated([*DOM, "memory"], {"guest": "128Mi"}), Code.INVALID, "spec.template.spec.domain.memory.guest"),
    (mutated([*DOM, "resources", "limits"], {"memory": "32Mi"}), Code.INVALID,
     "spec.template.spec.domain.resources.limits.memory"),
    # validation, blamed in KubeVirt terms
    (mutated([*DOM, "resources", "requests", "memory"], "64 MB"), Code.INVALID,
     "spec.template.spec.domain.resources.requests.memory"),
    (mutated([*DOM, "resources", "requests", "memory"], "1Ti"), Code.INVALID,
     "spec.template.spec.domain.resources.requests.memory"),
    (mutated(["metadata", "name"], "Test_VM"), Code.INVALID, "metadata.name"),
    (mutated(["metadata", "name"], "x" * 64), Code.INVALID, "metadata.name"),
    (mutated([*DEV, "interfaces", 0, "macAddress"], "03:00:00:00:00:01"), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].macAddress"),
    (mutated([*TS, "volumes", 0, "containerDisk", "image"], "../../etc/passwd"), Code.INVALID,
     "spec.template.spec.volumes[0].containerDisk.image"),
    (mutated([*DOM, "cpu"], {"cores": 0}), Code.INVALID, "spec.template.spec.domain.cpu.cores"),
    (mutated([*TS, "volumes", 0], {"name": "containerdisk", "emptyDisk": {"capacity": "3Ti"}}), Code.INVALID,
     "spec.template.spec.volumes[0].emptyDisk.capacity"),
    (mutated([*TS, "volumes", 1, "name"], "other"), Code.INVALID, "spec.template.spec.domain.devices.disks[1].name"),
    (mutated([*DEV, "disks", 0, "bootOrder"], 0), Code.INVALID,
     "spec.template.spec.domain.devices.disks[0].bootOrder"),
    (mutated(["spec", "template", "metadata", "labels", "bad key!"], "x"), Code.INVALID,
     "spec.template.metadata.labels"),
    (mutated([*TS, "terminationGracePeriodSeconds"], 7200), Code.INVALID,
     "spec.template.spec.terminationGracePeriodSeconds"),
    (mutated([*DEV, "interfaces", 1], {"name": "ext-net", "masquerade": {}}, T2), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[1].masquerade"),
    (mutated([*TS, "networks", 1], {"name": "ext-net", "pod": {}}, T2), Code.INVALID,
     "spec.template.spec.networks[1].pod"),
    (mutated([*TS, "networks", 1, "multus", "networkName"], "kube-system/multus-br", T2), Code.INVALID,
     "spec.template.spec.networks[1].multus.networkName"),
    (mutated([*DEV, "interfaces", 0, "ports"], [{"port": 80}, {"port": 80}]), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].ports[1].port"),
]


@pytest.mark.parametrize(("doc", "code", "field"), REFUSED, ids=[f"{r[2]}:{r[1].value}" for r in REFUSED])
def test_refused_with_the_field_to_blame(doc: dict[str, Any], code: Code, field: str) -> None:
    if doc["spec"].get("runStrategy") is not None:
        doc["spec"].pop("running")  # both set is a refusal of its own
    err = refused(doc)
    assert (err.code, err.field) == (code, field), err
    if code is Code.INVALID and "not supported" in err.message:
        assert err.message.startswith(field)


def test_running_and_run_strategy_are_exclusive() -> None:
    err = refused(mutated(["spec", "runStrategy"], "Always"))
    assert (err.code, err.field) == (Code.INVALID, "spec.runStrategy") and "mutually exclusive" in err.message


# --- NetworkAttachmentDefinition


def nad(config: dict[str, Any] | str, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "net1", **metadata},
            "spec": {"config": config if isinstance(config, str) else json.dumps(config)}}


BRIDGE: dict[str, Any] = {"cniVersion": "0.3.1", "name": "net1", "type": "bridge", "bridge": "br-net1",
                          "ipam": {"type": "host-local", "subnet": "10.10.0.0/24"}}


def cni(**change: Any) -> dict[str, Any]:
    config = copy.deepcopy(BRIDGE)
    for key, value in change.items():
        node: dict[str, Any]
        node, name = (config["ipam"], key[5:]) if key.startswith("ipam_") else (config, key)
        if value is DELETE:
            del node[name]
        else:
            node[name] = value
    return config


def test_network_attachment_with_range_and_gateway() -> None:
    att = parse_manifest_obj(nad(cni(ipam_rangeStart="10.10.0.100", ipam_rangeEnd="10.10.0.200",
                                     ipam_gateway="10.10.0.1", isGateway=False), namespace="default"))
    assert att == NetworkAttachment(name="net1", bridge="br-net1", subnet="10.10.0.0/24", gateway="10.10.0.1",
                                    range_start="10.10.0.100", range_end="10.10.0.200")


def test_whereabouts_range() -> None:
    config = cni(ipam_type="whereabouts", ipam_range="10.20.0.64/26", ipam_range_start="10.20.0.70")
    del config["ipam"]["subnet"]
    att = parse_manifest_obj(nad(config))
    assert isinstance(att, NetworkAttachment)
    assert (att.subnet, att.range_start) == ("10.20.0.64/26", "10.20.0.70")


@pytest.mark.parametrize("ipam", [DELETE, {}, {"type": "dhcp"}])
def test_a_nad_without_ipam_is_a_layer_2_network(ipam: Any) -> None:
    """The article's NAD has no ipam: virtbus gives no address there, the segment's DHCP server does."""
    att = parse_manifest_obj(nad(cni(ipam=ipam)))
    assert att == NetworkAttachment(name="net1", bridge="br-net1", subnet=None)


def test_the_articles_ovs_nad() -> None:
    """examples/ovs-net-br1.yaml, as the article writes it: Open vSwitch bridge br1, no ipam."""
    att = parse_manifest_obj(yaml.safe_load((REPO / "examples" / "ovs-net-br1.yaml").read_text()))
    assert att == NetworkAttachment(name="ovs-net-br1", bridge="br1", subnet=None, type="ovs")


def test_a_bridge_nad_on_a_vlan_as_the_bridge_cni_writes_it() -> None:
    att = parse_manifest_obj(nad(cni(vlan=100)))
    assert att == NetworkAttachment(name="net1", bridge="br-net1", subnet="10.10.0.0/24", vlan=100)


def test_an_ovs_nad_on_a_vlan_with_ipam() -> None:
    att = parse_manifest_obj(nad(cni(type="ovs", bridge="br1", vlan=100)))
    assert att == NetworkAttachment(name="net1", bridge="br1", subnet="10.10.0.0/24", type="ovs", vlan=100)


def test_a_layer_2_network_has_no_gateway_or_range() -> None:
    err = refused({"apiVersion": "virtbus/v1", "kind": "Network",
                   "spec": {"name": "l2", "bridge": "br-l2", "gateway": "10.1.0.1"}})
    assert (err.code, err.field) == (Code.INVALID, "spec.gateway"), err


NAD_REFUSED = [
    (nad(cni(type="macvlan")), Code.INVALID, "spec.config.type"),
    (nad(cni(isGateway=True)), Code.INVALID, "spec.config.isGateway"),
    (nad(cni(ipMasq=True)), Code.INVALID, "spec.config.ipMasq"),
    (nad(cni(vlan=4095)), Code.INVALID, "spec.config.vlan"),  # on a Linux bridge too
    (nad(cni(type="ovs", vlan=4095)), Code.INVALID, "spec.config.vlan"),
    (nad(cni(type="ovs", vlan=0)), Code.INVALID, "spec.config.vlan"),
    (nad(cni(type="ovs", vlan="100")), Code.BAD_REQUEST, "spec.config.vlan"),
    (nad(cni(type="ovs", trunk=[{"id": 42}])), Code.INVALID, "spec.config.trunk"),
    (nad(cni(ipam_type="dhcp")), Code.INVALID, "spec.config.ipam.subnet"),  # dhcp: the segment's, no subnet
    (nad(cni(ipam_type="static")), Code.INVALID, "spec.config.ipam.type"),
    (nad(cni(ipam_routes=[{"dst": "0.0.0.0/0"}])), Code.INVALID, "spec.config.ipam.routes"),
    (nad(cni(ipam_subnet=DELETE)), Code.INVALID, "spec.config.ipam.subnet"),
    (nad(cni(bridge=DELETE)), Code.INVALID, "spec.config.bridge"),
    (nad(cni(bridge=7)), Code.BAD_REQUEST, "spec.config.bridge"),
    (nad("{not json"), Code.BAD_REQUEST, "spec.config"),
    (nad(cni(bridge="a-bridge-name-too-long")), Code.INVALID, "spec.config.bridge"),
    (nad(cni(ipam_subnet="10.10.0.1/24")), Code.INVALID, "spec.config.ipam.subnet"),
    (nad(cni(ipam_subnet="10.0.0.0/31")), Code.INVALID, "spec.config.ipam.subnet"),
    (nad(cni(ipam_gateway="10.11.0.1")), Code.INVALID, "spec.config.ipam.gateway"),
    (nad(cni(ipam_rangeStart="10.10.0.9", ipam_rangeEnd="10.10.0.8")), Code.INVALID, "spec.config.ipam.rangeEnd"),
    (nad(cni(), name="Net_1"), Code.INVALID, "metadata.name"),
    ({**nad(cni()), "kind": "Foo"}, Code.INVALID, "kind"),
]


@pytest.mark.parametrize(("doc", "code", "field"), NAD_REFUSED, ids=[f"{r[2]}:{r[1].value}" for r in NAD_REFUSED])
def test_network_refused_with_the_field_to_blame(doc: dict[str, Any], code: Code, field: str) -> None:
    err = refused(doc)
    assert (err.code, err.field) == (code, field), err


# --- the manifest entry: formats, native form


def test_native_form() -> None:
    spec = parse_manifest(json.dumps({"apiVersion": "virtbus/v1", "kind": "VirtualMachine", "spec": {
        "name": "tiny", "memory": "32Mi", "runStrategy": "Manual",
        "disks": [{"name": "root"}], "volumes": [{"name": "root", "source": {"type": "containerDisk", "image": "x"}}],
    }}).encode())
    assert isinstance(spec, VMSpec) and spec.run_strategy is RunStrategy.MANUAL and spec.memory == "32Mi"
    net = parse_manifest_obj({"apiVersion": "virtbus/v1", "kind": "Network", "spec": {
        "name": "n", "bridge": "br0", "subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10"}})
    assert net == NetworkAttachment(name="n", bridge="br0", subnet="10.1.0.0/16", range_start="10.1.0.10")


def native(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "virtbus/v1", "kind": "VirtualMachine", "spec": {"name": "tiny", **spec}}


NATIVE_REFUSED = [
    (native(cpu={"cores": "2"}), Code.BAD_REQUEST, "spec.cpu.cores"),
    (native(cpu={"cores": 2, "model": "host"}), Code.BAD_REQUEST, "spec.cpu.model"),
    (native(disks=[{"name": "d", "bus": "usb"}]), Code.BAD_REQUEST, "spec.disks[0].bus"),
    ({"apiVersion": "virtbus/v1", "kind": "VirtualMachine", "spec": {}}, Code.BAD_REQUEST, "spec.name"),
    ({"apiVersion": "virtbus/v1", "kind": "VirtualMachine"}, Code.BAD_REQUEST, "spec"),
    ({**native(), "metadata": {}}, Code.BAD_REQUEST, "metadata"),
    ({**native(), "kind": "Pod"}, Code.BAD_REQUEST, "kind"),
    (native(memory="1Ti"), Code.INVALID, "spec.memory"),
    (native(disks=[{"name": "d"}]), Code.INVALID, "spec.disks[0].name"),
    ({"apiVersion": "virtbus/v1", "kind": "Network", "spec": {"name": "n", "bridge": "br0", "subnet": "x"}},
     Code.INVALID, "spec.subnet"),
]


@pytest.mark.parametrize(("doc", "code", "field"), NATIVE_REFUSED, ids=[r[2] for r in NATIVE_REFUSED])
def test_native_refused_with_the_field_to_blame(doc: dict[str, Any], code: Code, field: str) -> None:
    err = refused(doc)
    assert (err.code, err.field) == (code, field), err
    assert "$" not in err.message


@pytest.mark.parametrize("data", [
    b"", b"{", b"[]", b"- a\n- b", b"kind: Pod\napiVersion: v1", b"a: 1\n---\nb: 2", b"a: [\n",
    b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"a: " + b"[" * 100_000, b" " * (2 * 1024 * 1024),
    b"a: &x [1, 2]\nb: [*x, *x]\n",
])
def test_malformed_or_foreign_input(data: bytes) -> None:
    with pytest.raises(ApiError) as err:
        parse_manifest(data)
    assert err.value.code is Code.BAD_REQUEST


def test_several_documents_ask_for_one() -> None:
    text = (EXAMPLES / "multus-br.yaml").read_text() + "---\n" + (EXAMPLES / "testvm-2-secondary.yaml").read_text()
    with pytest.raises(ApiError, match="2 documents") as err:
        parse_manifest(text.encode())
    assert err.value.code is Code.BAD_REQUEST
    assert parse_manifest(b"---\n" + (EXAMPLES / "multus-br.yaml").read_bytes() + b"\n---\n") is not None


def test_content_type_is_honoured() -> None:
    with pytest.raises(ApiError, match="malformed JSON"):
        parse_manifest((EXAMPLES / "multus-br.yaml").read_bytes(), content_type="json")
    with pytest.raises(ApiError, match="content type"):
        parse_manifest(b"{}", content_type="text/xml")


def test_high_availability_is_an_annotation_with_a_strategy_that_restarts() -> None:
    doc = load("testvm-masquerade.yaml")
    assert not vm(doc).high_availability
    doc["metadata"]["annotations"] = {"virtbus.io/high-availability": "true", "note": "anything else is ignored"}
    doc["spec"].pop("running", None)
    doc["spec"]["runStrategy"] = "Always"
    assert vm(doc).high_availability
    doc["metadata"]["annotations"]["virtbus.io/high-availability"] = "yes"
    err = refused(doc)
    assert err.code is Code.INVALID and err.field == "metadata.annotations.virtbus.io/high-availability"
    doc["metadata"]["annotations"]["virtbus.io/high-availability"] = "true"
    doc["spec"]["runStrategy"] = "Manual"  # never run again after a failure: not HA
    err = refused(doc)
    assert err.code is Code.INVALID and err.field == "spec.runStrategy" and "high-availability" in err.message


def test_data_volume_templates_and_claims_become_volumes() -> None:
    doc = load("testvm-masquerade.yaml")
    doc["spec"]["dataVolumeTemplates"] = [
        {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "root-dv"},
         "spec": {"source": {"registry": {"url": "docker://quay.io/kubevirt/cirros-container-disk-demo"}},
                  "storage": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}},
        {"metadata": {"name": "data-dv"},
         "spec": {"source": {"blank": {}}, "pvc": {"resources": {"requests": {"storage": "64Mi"}}}}}]
    tspec = doc["spec"]["template"]["spec"]
    tspec["volumes"] += [{"name": "data", "dataVolume": {"name": "data-dv"}},
                         {"name": "kept", "persistentVolumeClaim": {"claimName": "my-disk"}}]
    tspec["domain"]["devices"]["disks"] += [{"name": "data", "disk": {"bus": "virtio"}},
                                            {"name": "kept", "disk": {"bus": "virtio"}}]
    spec = vm(doc)
    assert [(t.name, t.size, t.image) for t in spec.data_volume_templates] == [
        ("root-dv", "1Gi", "quay.io/kubevirt/cirros-container-disk-demo"), ("data-dv", "64Mi", None)]
    assert claims(spec.volumes)[-2:] == [(len(spec.volumes) - 2, "data-dv"), (len(spec.volumes) - 1, "my-disk")]
    doc["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["registry"]["url"] = "https://example.com/x.img"
    err = refused(doc)
    assert err.code is Code.INVALID and err.field == "spec.dataVolumeTemplates[0].spec.source.registry.url"
    doc["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["registry"]["url"] = "docker://quay.io/x"
    doc["spec"]["dataVolumeTemplates"][1]["spec"]["pvc"]["resources"]["requests"]["storage"] = "9Ti"
    err = refused(doc)
    assert err.code is Code.INVALID
    assert err.field == "spec.dataVolumeTemplates[1].spec.storage.resources.requests.storage"


def test_a_virtual_machine_instance_of_its_own() -> None:
    from proto.manifest import parse_instance_obj

    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    spec = parse_instance_obj(doc)
    assert spec.name == "testvmi" and spec.labels == {"special": "vmi-cirros"}
    assert spec.termination_grace_period_seconds == 0 and spec.run_strategy is RunStrategy.ONCE
    bad = copy.deepcopy(doc)
    bad["spec"]["domain"]["devices"]["disks"][0]["disk"]["bus"] = "floppy"
    with pytest.raises(ApiError) as err:  # blamed where the user wrote it, not in a VM's template
        parse_instance_obj(bad)
    assert err.value.field == "spec.domain.devices.disks[0].disk.bus", err.value.field
    bad = copy.deepcopy(doc)
    bad["spec"]["volumes"][0]["containerDisk"]["image"] = "not an image!"
    with pytest.raises(ApiError) as err:
        parse_instance_obj(bad)
    assert (err.value.field or "").startswith("spec.volumes[0]"), err.value.field
    ha = copy.deepcopy(doc)
    ha["metadata"]["annotations"] = {"virtbus.io/high-availability": "true"}
    with pytest.raises(ApiError) as err:
        parse_instance_obj(ha)
    assert err.value.code is Code.INVALID and "VirtualMachine" in err.value.message
    with pytest.raises(ApiError):
        parse_instance_obj({**doc, "kind": "VirtualMachine"})
