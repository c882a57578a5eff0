"""KubeVirt's defaults for what a manifest leaves out, as `virtctl create vm` leaves it out: a volume
without a disk is a disk of its own (SetDefaultVolumeDisk), and a VM with no interface and no network
is on the pod network (autoattachPodInterface, bound by KubeVirt's default, bridge) unless it says
autoattachPodInterface: false. Printed back, each applies as the same VM."""

from __future__ import annotations

import copy
import json
from typing import Any

from proto.manifest import parse_instance, parse_manifest_obj
from proto.resources import vm_manifest
from proto.spec import Disk, Interface, Network, VMSpec

# what `virtctl create vm --name cvm --instancetype u1.nano --volume-containerdisk src:IMAGE` prints,
# its instancetype already written in (the API does that before it reads a VM)
CREATED: dict[str, Any] = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "cvm"},
    "spec": {"runStrategy": "Always", "template": {"metadata": {"creationTimestamp": None}, "spec": {
        "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}},
        "terminationGracePeriodSeconds": 180,
        "volumes": [{"containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"},
                     "name": "cvm-containerdisk-0"},
                    {"cloudInitNoCloud": {"userData": "#cloud-config\n"}, "name": "cloudinitdisk"}]}}},
    "status": {}}


def vm(obj: dict[str, Any]) -> VMSpec:
    spec = parse_manifest_obj(copy.deepcopy(obj))
    assert isinstance(spec, VMSpec)
    return spec


def test_what_virtctl_create_vm_writes_runs_as_kubevirt_runs_it() -> None:
    spec = vm(CREATED)
    assert spec.disks == [Disk(name="cvm-containerdisk-0"), Disk(name="cloudinitdisk")]
    assert spec.interfaces == [Interface(name="default", binding="bridge")]
    assert spec.networks == [Network(name="default", kind="pod")]
    assert vm(vm_manifest(spec)) == spec


def test_autoattach_off_leaves_it_without_a_nic_and_printed_back_it_stays_so() -> None:
    obj = copy.deepcopy(CREATED)
    obj["spec"]["template"]["spec"]["domain"]["devices"]["autoattachPodInterface"] = False
    spec = vm(obj)
    assert spec.interfaces == [] and spec.networks == []
    printed = vm_manifest(spec)
    assert printed["spec"]["template"]["spec"]["domain"]["devices"]["autoattachPodInterface"] is False
    assert vm(printed) == spec


def test_disks_and_nics_it_names_are_kept_as_they_are() -> None:
    obj = copy.deepcopy(CREATED)
    tspec = obj["spec"]["template"]["spec"]
    tspec["domain"]["devices"] = {"disks": [{"name": "cloudinitdisk", "cdrom": {"bus": "sata"}}],
                                  "interfaces": [{"name": "default", "masquerade": {}}]}
    tspec["networks"] = [{"name": "default", "pod": {}}]
    spec = vm(obj)
    assert [d.name for d in spec.disks] == ["cloudinitdisk", "cvm-containerdisk-0"]
    assert spec.disks[0].device == "cdrom"
    assert spec.interfaces == [Interface(name="default", binding="masquerade")]


def test_a_vmi_gets_the_same() -> None:
    tspec = CREATED["spec"]["template"]["spec"]
    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "vmi"},
           "spec": tspec}
    spec = parse_instance(json.dumps(doc).encode())
    assert [d.name for d in spec.disks] == ["cvm-containerdisk-0", "cloudinitdisk"]
    assert spec.networks == [Network(name="default", kind="pod")]
