"""Volume hotplug's pure parts: what addvolume and removevolume make of a spec (proto.hotplug), KubeVirt
manifests with hotpluggable volumes read and written back, the node's word on volumes checked and
applied, the domain's SCSI controller, and the launcher's plan and status (launcher.hotplugplan)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import msgspec
import pytest

from launcher.domain import DiskPlan, DomainPlan, compose_domain_xml, disk_xml, plan_domain
from launcher.hotplugplan import Outcome, Steps, free_target, free_unit, live_disks, plan, statuses
from proto.errors import ApiError, Code
from proto.hotplug import AddVolumeRequest, added, boot_spec, hotplugged, removed
from proto.manifest import parse_manifest_obj
from proto.nodeapi import StatusReport, apply_report
from proto.resources import vm_manifest, vmi_object
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume
from proto.state import VMI, HotplugPhase, Phase, VolumeStatus
from proto.validation import validate_vm

ROOT = Volume(name="root", source=PersistentVolumeClaim(claim_name="rootvol"))
BASE = VMSpec(name="vm1", disks=[Disk(name="root")], volumes=[ROOT])


def add(spec: VMSpec = BASE, **fields: object) -> VMSpec:
    return added(spec, AddVolumeRequest(name=spec.name, **fields))  # type: ignore[arg-type]


def refused(call: object, code: Code, field: str) -> str:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    assert (info.value.code, info.value.field) == (code, field), info.value
    return info.value.message


def test_a_volume_is_added_on_a_scsi_disk_named_for_it_and_removed_again() -> None:
    spec = add(volume_name="data")
    assert spec.disks[-1] == Disk(name="data", bus="scsi", serial="data")  # virtctl's serial: the name
    assert spec.volumes[-1] == Volume(name="data", source=PersistentVolumeClaim(claim_name="data", hotpluggable=True))
    assert hotplugged(spec) == {"data": "data"}
    named = add(volume_name="data", disk_name="extra", serial="S-1", cache="none")
    assert named.disks[-1] == Disk(name="extra", bus="scsi", serial="S-1", cache="none")
    assert hotplugged(named) == {"extra": "data"}
    assert removed(named, "extra") == BASE
    assert boot_spec(named) == BASE and boot_spec(BASE) is BASE  # the boot leaves hotplugged volumes out
    validate_vm(named)  # a spec with it is a spec like any other


def test_what_addvolume_refuses() -> None:
    spec = add(volume_name="data")
    assert "already exists" in refused(lambda: add(spec, volume_name="data"), Code.ALREADY_EXISTS, "volumeName")
    assert "as data" in refused(lambda: add(spec, volume_name="data", disk_name="again"), Code.ALREADY_EXISTS,
                                "volumeName")
    refused(lambda: add(spec, volume_name="other", disk_name="root"), Code.ALREADY_EXISTS, "diskName")
    refused(lambda: add(volume_name="data", bus="virtio"), Code.INVALID, "bus")
    refused(lambda: add(volume_name="data", bus="sata"), Code.INVALID, "bus")
    refused(lambda: add(volume_name="data", disk_type="lun"), Code.INVALID, "diskType")
    refused(lambda: add(volume_name="data", serial="has space"), Code.INVALID, "serial")
    refused(lambda: add(volume_name="a/../b"), Code.INVALID, "volumeName")
    refused(lambda: add(volume_name="data", disk_name="eth0;reboot"), Code.INVALID, "diskName")
    no_hotplug = msgspec.structs.replace(BASE, disable_hotplug=True)
    assert "disableHotplug" in refused(lambda: add(no_hotplug, volume_name="data"), Code.INVALID, "name")
    full = BASE
    for i in range(15):
        full = add(full, volume_name=f"v{i}")
    refused(lambda: add(full, volume_name="one-more"), Code.INVALID, "spec.disks")


def test_what_removevolume_refuses() -> None:
    assert "not hotpluggable" in refused(lambda: removed(BASE, "root"), Code.INVALID, "volumeName")
    refused(lambda: removed(BASE, "nosuch"), Code.NOT_FOUND, "volumeName")


def parse_vm(obj: object) -> VMSpec:
    spec = parse_manifest_obj(obj)
    assert isinstance(spec, VMSpec)
    return spec


def manifest(volume: Mapping[str, object], disk: Mapping[str, object] | None = None,
             devices: Mapping[str, object] | None = None) -> dict[str, object]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"}, "spec": {
        "runStrategy": "Halted", "template": {"spec": {
            "domain": {"resources": {"requests": {"memory": "64Mi"}},
                       "devices": {"disks": [disk] if disk else [], **(devices or {})}},
            "volumes": [{"name": "data", **volume}]}}}}


def test_kubevirt_manifests_with_hotpluggable_volumes_are_read_and_written_back() -> None:
    for source in ({"dataVolume": {"name": "dv", "hotpluggable": True}},
                   {"persistentVolumeClaim": {"claimName": "dv", "hotpluggable": True}}):
        spec = parse_vm(manifest(source, {"name": "data", "disk": {"bus": "scsi"}}))
        assert spec.volumes == [Volume(name="data", source=PersistentVolumeClaim(claim_name="dv", hotpluggable=True))]
        back = vm_manifest(spec)["spec"]["template"]["spec"]
        assert back["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "dv",
                                                                              "hotpluggable": True}}]
        assert parse_vm(vm_manifest(spec)) == spec
    # no disk named: KubeVirt's default disk, on the scsi bus for a hotpluggable volume
    spec = parse_vm(manifest({"dataVolume": {"name": "dv", "hotpluggable": True}}))
    assert spec.disks == [Disk(name="data", bus="scsi")]
    off = parse_vm(manifest({"dataVolume": {"name": "dv"}}, devices={"disableHotplug": True}))
    assert off.disable_hotplug and vm_manifest(off)["spec"]["template"]["spec"]["domain"]["devices"][
        "disableHotplug"] is True


@pytest.mark.parametrize(("volume", "disk", "devices", "field"), [
    ({"dataVolume": {"name": "dv", "hotpluggable": True}}, {"name": "data", "disk": {"bus": "virtio"}}, None,
     "spec.template.spec.domain.devices.disks[0].disk.bus"),
    ({"dataVolume": {"name": "dv", "hotpluggable": True}}, {"name": "data", "cdrom": {"bus": "scsi"}}, None,
     "spec.template.spec.domain.devices.disks[0].cdrom.bus"),
    ({"dataVolume": {"name": "dv", "hotpluggable": True}}, None, {"disableHotplug": True},
     "spec.template.spec.volumes[0].dataVolume.hotpluggable"),
    ({"dataVolume": {"name": "dv", "hotpluggable": "yes"}}, None, None,
     "spec.template.spec.volumes[0].dataVolume.hotpluggable"),
])
def test_hotpluggable_volumes_that_cannot_be_are_refused_by_path(volume: dict[str, object],
                                                                  disk: dict[str, object] | None,
                                                                  devices: dict[str, object] | None,
                                                                  field: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_vm(manifest(volume, disk, devices))
    assert info.value.field == field, info.value


RUNNING = VMI(name="vm1", uid="u1", spec=BASE, created_at=1.0, phase=Phase.RUNNING, node_name="node1")


def test_a_nodes_word_on_volumes_is_checked_and_shown_as_kubevirt_shows_it() -> None:
    said = [VolumeStatus(name="root", target="vda"),
            VolumeStatus(name="data", target="sda", phase=HotplugPhase.READY, reason="VolumeReady",
                         message="Successfully attach hotplugged volume data to VM", hotplug=True)]
    after = apply_report(RUNNING, StatusReport(vmi="vm1", uid="u1", volume_status=said), "node1", 2.0)
    assert after is not None and after.volume_status == said
    assert vmi_object(after)["status"]["volumeStatus"] == [
        {"name": "root", "target": "vda"},
        {"name": "data", "target": "sda", "phase": "Ready", "reason": "VolumeReady",
         "message": "Successfully attach hotplugged volume data to VM", "hotplugVolume": {}}]
    for bad, field in ((VolumeStatus(name="../x"), "volume_status[0].name"),
                       (VolumeStatus(name="data", target="sda; rm"), "volume_status[0].target"),
                       (VolumeStatus(name="data", message="a\nb"), "volume_status[0].message")):
        with pytest.raises(ApiError) as info:
            apply_report(RUNNING, StatusReport(vmi="vm1", uid="u1", volume_status=[bad]), "node1", 2.0)
        assert (info.value.code, info.value.field) == (Code.INVALID, field)
    with pytest.raises(ApiError) as twice:
        apply_report(RUNNING, StatusReport(vmi="vm1", uid="u1", volume_status=[said[0], said[0]]), "node1", 2.0)
    assert twice.value.field == "volume_status"
    with pytest.raises(ApiError) as other:  # only the node the instance is bound to says anything of it
        apply_report(RUNNING, StatusReport(vmi="vm1", uid="u1", volume_status=said), "node2", 2.0)
    assert other.value.code is Code.FORBIDDEN


def domain_plan(spec: VMSpec) -> DomainPlan:
    boot = boot_spec(spec)  # as the launcher boots it
    paths = {v.name: (f"/v/{v.name}.qcow2", "qcow2") for v in boot.volumes}
    return plan_domain(boot, uid="u1", domain_type="qemu", disk_paths=paths, taps={}, serial_log="/s.log")


def test_the_domain_has_a_scsi_controller_for_hotplug_unless_disabled() -> None:
    controller = '<controller type="scsi" index="0" model="virtio-scsi"'
    assert controller in compose_domain_xml(domain_plan(BASE))
    assert controller not in compose_domain_xml(domain_plan(msgspec.structs.replace(BASE, disable_hotplug=True)))
    # a hotpluggable volume is not the boot's: the launcher attaches it once the guest runs
    spec = add(volume_name="data", cache="writethrough")
    boot = compose_domain_xml(domain_plan(spec))
    assert "ua-data" not in boot
    hot = disk_xml(DiskPlan(name="data", path="/v/data.qcow2", format="qcow2", bus="scsi", target="sda",
                            readonly=False, boot_order=None, serial="data", cache="writethrough", unit=1))
    assert ET.canonicalize(hot, strip_text=True) == ET.canonicalize(
        '<disk type="file" device="disk"><driver name="qemu" type="qcow2" cache="writethrough"/>'
        '<source file="/v/data.qcow2"/><target dev="sda" bus="scsi"/><serial>data</serial>'
        '<alias name="ua-data"/><address type="drive" controller="0" bus="0" target="0" unit="1"/></disk>')
    assert live_disks(boot).targets == {"root": "vda"}
    # as libvirt fills in the addresses of a running domain: LUNs 0 and 3 of the scsi disks taken
    live = ("<domain><devices>"
            '<disk><target dev="vda" bus="virtio"/><alias name="ua-root"/>'
            '<address type="pci" domain="0x0000" bus="0x03" slot="0x00" function="0x0"/></disk>'
            '<disk><target dev="sda" bus="scsi"/><alias name="ua-a"/>'
            '<address type="drive" controller="0" bus="0" target="0" unit="0"/></disk>'
            '<disk><target dev="sdb" bus="scsi"/><alias name="ua-b"/>'
            '<address type="drive" controller="0" bus="0" target="0" unit="3"/></disk>'
            '<disk><target dev="sdc" bus="sata"/><alias name="ua-c"/>'
            '<address type="drive" controller="0" bus="0" target="0" unit="1"/></disk>'
            "</devices></domain>")
    assert live_disks(live).targets == {"root": "vda", "a": "sda", "b": "sdb", "c": "sdc"}
    assert live_disks(live).units == {0, 3}  # a sata disk's address is the AHCI controller's
    assert free_unit({0, 3}) == 1 and free_unit({1, 2}) == 3 and free_unit(set()) == 1


def test_the_launcher_attaches_what_the_spec_adds_and_detaches_what_it_drops() -> None:
    spec = add(volume_name="data")
    assert plan(spec, {"root": "vda"}) == Steps(attach=("data",), detach=())
    assert plan(spec, {"root": "vda", "data": "sda"}) == Steps(attach=(), detach=())
    assert plan(BASE, {"root": "vda", "data": "sda"}) == Steps(attach=(), detach=("data",))
    assert free_target(["vda", "sda", "sdc"]) == "sdb"
    with pytest.raises(ValueError, match="no SCSI target"):
        free_target([f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz"])


def test_the_status_says_each_volume_and_where_each_hotplug_stands() -> None:
    spec = add(add(volume_name="data"), volume_name="late")
    out = statuses(spec, {"root": "vda", "data": "sda", "gone": "sdb"},
                   Outcome(waiting={"late": "volume late is Populating (1 of 4 bytes)"}, failed={}))
    assert [(s.name, s.target, s.phase, s.reason) for s in out] == [
        ("root", "vda", None, ""), ("data", "sda", HotplugPhase.READY, "VolumeReady"),
        ("late", "", HotplugPhase.PENDING, "VolumePending"), ("gone", "sdb", HotplugPhase.DETACHING, "VolumeDetaching")]
    assert out[2].message == "volume late is Populating (1 of 4 bytes)" and out[2].hotplug and not out[0].hotplug
    failed = statuses(spec, {"root": "vda"}, Outcome(waiting={}, failed={"data": "attach: no room"}))
    assert (failed[1].phase, failed[1].reason, failed[1].message) == (HotplugPhase.PENDING, "AttachFailed",
                                                                      "attach: no room")
