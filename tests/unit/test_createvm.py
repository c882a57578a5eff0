"""`virtbus create vm` (ctl.createvm, pure): the manifest virtctl create vm would print for the same
flags, which virtbus reads as the VM they describe; flags it cannot honour are typed errors naming them."""

from __future__ import annotations

import argparse

import pytest

from ctl import cli
from ctl.createvm import manifest
from proto.errors import ApiError
from proto.manifest import parse_manifest_obj
from proto.spec import CloudInitNoCloud, ContainerDisk, PersistentVolumeClaim, VMSpec


def args(*flags: str) -> argparse.Namespace:
    return cli.parser().parse_args(["create", "vm", *flags])


def test_a_containerdisk_vm_as_virtctl_writes_it_reads_as_that_vm() -> None:
    doc = manifest(args("--name", "web", "--volume-containerdisk", "src:quay.io/kubevirt/cirros-container-disk-demo",
                        "--volume-pvc", "src:data,name:data,bootorder:1", "--cloud-init-user-data",
                        "I2Nsb3VkLWNvbmZpZwo=", "--memory", "128Mi", "--run-strategy", "Halted"))
    assert (doc["kind"], doc["metadata"]["name"], doc["spec"]["runStrategy"]) == ("VirtualMachine", "web", "Halted")
    assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 180
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec)
    assert [(v.name, type(v.source)) for v in spec.volumes] == [
        ("web-containerdisk-0", ContainerDisk), ("data", PersistentVolumeClaim), ("cloudinitdisk", CloudInitNoCloud)]
    assert {d.name: d.boot_order for d in spec.disks} == {"data": 1, "web-containerdisk-0": None,
                                                           "cloudinitdisk": None}
    assert spec.memory == "128Mi" and [n.kind for n in spec.networks] == ["pod"]


def test_defaults_and_an_instancetype() -> None:
    doc = manifest(args(), random_name="abcde")
    assert doc["metadata"]["name"] == "vm-abcde" and doc["spec"]["runStrategy"] == "Always"
    assert doc["spec"]["template"]["spec"]["domain"]["memory"] == {"guest": "512Mi"}
    sized = manifest(args("--instancetype", "virtualmachineinstancetype/tiny", "--preference", "virtio-cores"))
    assert sized["spec"]["instancetype"] == {"name": "tiny", "kind": "VirtualMachineInstancetype"}
    assert sized["spec"]["preference"] == {"name": "virtio-cores"}
    assert "memory" not in sized["spec"]["template"]["spec"]["domain"]


def test_a_blank_volume_is_a_data_volume_template() -> None:
    doc = manifest(args("--name", "b", "--volume-blank", "size:1Gi"))
    assert doc["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] == "b-blank-0"
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec) and spec.data_volume_templates[0].size == "1Gi"


@pytest.mark.parametrize(("flags", "field"), [
    (["--name", "Bad_Name"], "name"), (["--run-strategy", "Sometimes"], "run-strategy"),
    (["--volume-containerdisk", "name:x"], "volume-containerdisk"),
    (["--volume-containerdisk", "src:a,size:1Gi"], "volume-containerdisk"),
    (["--volume-pvc", "src:a,bootorder:0"], "volume-pvc"),
    (["--volume-pvc", "src:a,bootorder:1", "--volume-pvc", "src:b,bootorder:1"], "volume-pvc"),
    (["--volume-pvc", "src:a,name:x", "--volume-pvc", "src:b,name:x"], "volume-pvc"),
    (["--instancetype", "pod/x"], "instancetype"), (["--instancetype", "x", "--memory", "1Gi"], "memory"),
    (["--cloud-init-user-data", "#not base64"], "cloud-init-user-data")])
def test_flags_it_refuses(flags: list[str], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        manifest(args(*flags))
    assert refused.value.field == field
