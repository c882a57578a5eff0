"""The seed manifests convert as they are; what virtbus cannot honour is refused by field path."""

import copy
import json
from typing import Any

import pytest
import yaml

from proto.errors import ApiError, Code
from proto.manifest import parse_manifest, parse_manifest_obj
from proto.spec import CloudInitNoCloud, ContainerDisk, NetworkAttachment, RunStrategy, VMSpec
from tests.conftest import EXAMPLES


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(doc, dict)
    return doc


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


def test_testvm_2_secondary() -> None:
    vm = parse_manifest((EXAMPLES / "testvm-2-secondary.yaml").read_bytes())
    assert isinstance(vm, VMSpec)
    assert [(i.name, i.binding) for i in vm.interfaces] == [("default", "masquerade"), ("ext-net", "bridge")]
    assert [(n.name, n.kind, n.network_name) for n in vm.networks] == [
        ("default", "pod", None), ("ext-net", "multus", "multus-br")]


def test_multus_network_attachment() -> None:
    net = parse_manifest((EXAMPLES / "multus-br.yaml").read_bytes())
    assert net == NetworkAttachment(name="multus-br", bridge="multus-bridge", subnet="192.168.100.0/24")


def test_json_and_yaml_agree() -> None:
    doc = load("testvm-masquerade.yaml")
    from_yaml = parse_manifest((EXAMPLES / "testvm-masquerade.yaml").read_bytes())
    assert parse_manifest(json.dumps(doc).encode()) == from_yaml


def test_running_maps_to_run_strategy() -> None:
    doc = load("testvm-masquerade.yaml")
    doc["spec"]["running"] = True
    vm = parse_manifest_obj(doc)
    assert isinstance(vm, VMSpec) and vm.run_strategy is RunStrategy.ALWAYS


def test_native_form() -> None:
    vm = parse_manifest(json.dumps({"apiVersion": "virtbus/v1", "kind": "VirtualMachine", "spec": {
        "name": "tiny", "memory": "32Mi", "runStrategy": "Manual",
        "disks": [{"name": "root"}], "volumes": [{"name": "root", "source": {"type": "containerDisk", "image": "x"}}],
    }}).encode())
    assert isinstance(vm, VMSpec) and vm.run_strategy is RunStrategy.MANUAL and vm.memory == "32Mi"


def mutated(path: list[str | int], value: Any, name: str = "testvm-masquerade.yaml") -> dict[str, Any]:
    doc = copy.deepcopy(load(name))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


TS = ["spec", "template", "spec"]
REFUSED = [
    (mutated([*TS, "domain", "devices", "gpus"], [{"name": "g"}]), Code.INVALID,
     "spec.template.spec.domain.devices.gpus"),
    (mutated([*TS, "volumes", 0, "dataVolume"], {"name": "dv"}), Code.INVALID,
     "spec.template.spec.volumes[0].dataVolume"),
    (mutated(["spec", "runStrategy"], "Always"), Code.INVALID, "spec.runStrategy"),
    (mutated(["spec", "running"], "yes"), Code.BAD_REQUEST, "spec.running"),
    (mutated([*TS, "domain", "resources", "requests", "memory"], "64 MB"), Code.INVALID,
     "spec.template.spec.domain.resources.requests.memory"),
    (mutated([*TS, "domain", "resources", "requests", "memory"], "1Ti"), Code.INVALID,
     "spec.template.spec.domain.resources.requests.memory"),
    (mutated(["metadata", "name"], "Test_VM"), Code.INVALID, "metadata.name"),
    (mutated(["metadata", "name"], "x" * 64), Code.INVALID, "metadata.name"),
    (mutated([*TS, "domain", "devices", "interfaces", 0, "macAddress"], "03:00:00:00:00:01"), Code.INVALID,
     "spec.template.spec.domain.devices.interfaces[0].macAddress"),
    (mutated([*TS, "volumes", 0, "containerDisk", "image"], "../../etc/passwd"), Code.INVALID,
     "spec.template.spec.volumes[0].containerDisk.image"),
    (mutated([*TS, "domain", "cpu"], {"cores": 0}), Code.INVALID, "spec.template.spec.domain.cpu.cores"),
    (mutated([*TS, "volumes", 1, "cloudInitNoCloud", "userDataBase64"], "%%%"), Code.INVALID,
     "spec.template.spec.volumes[1].cloudInitNoCloud.userDataBase64"),
    (mutated(["spec", "runStrategy"], "Once"), Code.INVALID, "spec.runStrategy"),
]


@pytest.mark.parametrize(("doc", "code", "field"), REFUSED, ids=[r[2] + ":" + r[1] for r in REFUSED])
def test_refused_with_the_field_to_blame(doc: dict[str, Any], code: Code, field: str) -> None:
    if "runStrategy" in field and doc["spec"].get("runStrategy") == "Always":
        doc["spec"]["running"] = False  # both set: KubeVirt refuses that too
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(doc)
    assert (err.value.code, err.value.field) == (code, field), err.value


def test_disk_without_volume_is_refused() -> None:
    doc = load("testvm-masquerade.yaml")
    doc["spec"]["template"]["spec"]["volumes"].pop()
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(doc)
    assert err.value.field == "spec.template.spec.domain.devices.disks[1].name"


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"- a\n- b", b"kind: Pod\napiVersion: v1", b"a: 1\n---\nb: 2"])
def test_malformed_or_foreign_input(data: bytes) -> None:
    with pytest.raises(ApiError) as err:
        parse_manifest(data)
    assert err.value.code is Code.BAD_REQUEST
