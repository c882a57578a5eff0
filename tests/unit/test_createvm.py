"""`virtbus create vm` (ctl.createvm, pure): the manifest virtctl create vm would print for the same
flags, which virtbus reads as the VM they describe; flags it cannot honour are typed errors naming them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from ctl import cli
from ctl.createvm import manifest
from proto.errors import ApiError
from proto.manifest import parse_manifest_obj
from proto.spec import CloudInitConfigDrive, CloudInitNoCloud, ContainerDisk, PersistentVolumeClaim, VMSpec


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


def test_volume_import_blank_and_registry_as_virtctl_writes_them() -> None:
    doc = manifest(args("--name", "imp", "--volume-import", "type:registry,url:docker://quay.io/kubevirt/"
                        "cirros-container-disk-demo,size:1Gi,bootorder:1", "--volume-import",
                        "type:blank,size:2Gi,name:scratch"))
    templates = doc["spec"]["dataVolumeTemplates"]
    assert [t["metadata"]["name"] for t in templates] == ["imp-registry-0", "scratch"]
    assert templates[0]["spec"]["source"] == {"registry": {"url": "docker://quay.io/kubevirt/cirros-container-disk-demo"}}
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec)
    assert [(t.name, t.size, t.image) for t in spec.data_volume_templates] == [
        ("imp-registry-0", "1Gi", "quay.io/kubevirt/cirros-container-disk-demo"), ("scratch", "2Gi", None)]
    assert {d.name: d.boot_order for d in spec.disks}["imp-registry-0"] == 1


def test_the_user_data_virtctl_generates_for_a_user_a_password_and_keys(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret: #not a comment\n")
    doc = manifest(args("--name", "u", "--user", "fedora", "--password-file", str(secret),
                        "--ssh-key", "ssh-ed25519 AAAAC3Nza me@host", "--ssh-key", "ssh-rsa AAAAB3 you@there"))
    [volume] = doc["spec"]["template"]["spec"]["volumes"]
    user_data = volume["cloudInitNoCloud"]["userData"]
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data) == {"user": "fedora", "password": "s3cret: #not a comment",
                                         "chpasswd": {"expire": False},
                                         "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza me@host",
                                                                 "ssh-rsa AAAAB3 you@there"]}
    drive = manifest(args("--name", "d", "--user", "fedora", "--cloud-init", "configdrive"))
    assert "cloudInitConfigDrive" in drive["spec"]["template"]["spec"]["volumes"][0]
    spec = parse_manifest_obj(drive)
    assert isinstance(spec, VMSpec) and isinstance(spec.volumes[0].source, CloudInitConfigDrive)
    assert "volumes" not in manifest(args("--name", "n", "--user", "fedora", "--cloud-init", "none"))["spec"][
        "template"]["spec"]


@pytest.mark.parametrize(("flags", "field"), [
    (["--volume-import", "type:http,url:https://x/disk.img,size:1Gi"], "volume-import"),
    (["--volume-import", "type:pvc,src:data,size:1Gi"], "volume-import"),
    (["--volume-import", "type:floppy,size:1Gi"], "volume-import"),
    (["--volume-import", "type:registry,size:1Gi"], "volume-import"),
    (["--volume-import", "type:blank"], "volume-import"),
    (["--volume-import", "type:blank,size:1Gi,url:docker://x"], "volume-import"),
    (["--volume-import", "type:registry,url:http://x,size:1Gi"], None),
    (["--user", "a:b"], "user"), (["--ssh-key", "a\nb"], "ssh-key"),
    (["--password-file", "/nonexistent/password"], "password-file"),
    (["--user", "u", "--cloud-init-user-data", "I2Nsb3VkLWNvbmZpZwo="], "cloud-init-user-data"),
    (["--cloud-init", "floppy", "--user", "u"], "cloud-init")])
def test_what_it_refuses_of_imports_and_cloud_init(flags: list[str], field: str | None) -> None:
    with pytest.raises(ApiError) as refused:
        parse_manifest_obj(manifest(args(*flags)))
    if field is not None:
        assert refused.value.field == field, refused.value


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
