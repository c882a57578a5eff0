"""KubeVirt's volume hotplug (virtctl addvolume / removevolume), pure: the requests, and what they
make of a spec. The api service applies them by compare-and-set to the VM and to its running
instance (scheduler.hotplug); the instance's launcher attaches and detaches the disks as its spec
says (launcher.hotplug).

A hotplugged volume is a virtbus volume (a PVC or DataVolume) marked ``hotpluggable``, on a disk of
the scsi bus, as virtctl's default: the guest gets and loses the disk through the virtio-scsi
controller's events while it runs. virtio's would need a spare PCIe slot with hotplug, which the
guest is given none of. As virtctl now always does, it is kept in the VM's spec: each later start
attaches it again once the guest runs (never the boot's disk: one whose file is not ready holds no
boot), and only ``removevolume`` takes it away (a volume not hotpluggable stays until the VM is
stopped and changed).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proto.api import Message
from proto.errors import ApiError, Code
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume, claims, is_hotpluggable
from proto.validation import DISK_SERIAL, check_name, validate_storage

HOTPLUG_BUS = "scsi"
# KubeVirt's words, which its users grep for
ADDED = "Successfully submitted add volume request to {kind} {name} for volume {volume}"
REMOVED = "Successfully submitted remove volume request to {kind} {name} for volume {volume}"


class AddVolumeRequest(Message, frozen=True):
    """``virtbus addvolume VM --volume-name V`` (virtctl's flags): the volume, on a scsi disk named
    ``disk_name`` (else the volume's name) whose serial the guest reads (else that name)."""

    name: str  # the VM, or the VMI on its own
    volume_name: str  # the virtbus volume: KubeVirt's DataVolume or PVC
    disk_name: str | None = None
    serial: str | None = None
    cache: Literal["none", "writethrough", "writeback"] | None = None
    bus: str = HOTPLUG_BUS
    disk_type: str = "disk"
    dry_run: bool = False  # checked as it would be applied, and nothing written


class RemoveVolumeRequest(Message, frozen=True):
    """``virtbus removevolume VM --volume-name V``: V is the volume's name in the spec (its disk's)."""

    name: str
    volume_name: str
    dry_run: bool = False


def check_add(req: AddVolumeRequest) -> None:
    """The request's own fields, before anything is read."""
    check_name(req.name, "name")
    check_name(req.volume_name, "volumeName", "volume name")
    if req.disk_name is not None:
        check_name(req.disk_name, "diskName", "disk name")
    if req.disk_type != "disk":
        if req.disk_type == "lun":
            raise ApiError(Code.INVALID, "a lun passes SCSI commands through to a block device, and every virtbus "
                                         "volume is a file; add it as a disk", "diskType")
        raise ApiError(Code.INVALID, f"disk type {req.disk_type[:32]!r}: only disk and lun are disk types", "diskType")
    if req.serial is not None and not DISK_SERIAL.match(req.serial):  # KubeVirt's rule, as a manifest's
        raise ApiError(Code.INVALID, "a disk's serial is 1 to 256 of A-Z a-z 0-9 _ . + -", "serial")
    if req.bus != HOTPLUG_BUS:
        if req.bus == "virtio":
            raise ApiError(Code.INVALID, "a hotplugged disk is on the scsi bus here: a virtio disk would need a "
                                         "PCIe slot with hotplug, which virtbus's guests are not given", "bus")
        raise ApiError(Code.INVALID, f"bus {req.bus[:32]!r}: a hotplugged disk is on the scsi bus", "bus")


def added(spec: VMSpec, req: AddVolumeRequest, kind: str = "VM") -> VMSpec:
    """The spec with the volume on a new scsi disk; raises ApiError (and changes nothing) where it
    cannot take it."""
    check_add(req)
    if spec.disable_hotplug:
        raise ApiError(Code.INVALID, f"{kind} {spec.name} has hotplug disabled "
                                     "(spec.template.spec.domain.devices.disableHotplug)", "name")
    name = req.disk_name or req.volume_name
    if any(v.name == name for v in spec.volumes) or any(d.name == name for d in spec.disks):
        field = "diskName" if req.disk_name else "volumeName"
        raise ApiError(Code.ALREADY_EXISTS, f"Unable to add volume [{name}] because volume with that name already "
                                            f"exists in {kind} {spec.name}", field)
    held = [spec.volumes[i].name for i, claim in claims(spec.volumes) if claim == req.volume_name]
    if held:
        raise ApiError(Code.ALREADY_EXISTS, f"volume {req.volume_name} is already {kind} {spec.name}'s, as "
                                            f"{held[0]}", "volumeName")
    disk = Disk(name=name, bus="scsi", serial=req.serial or name, cache=req.cache)
    volume = Volume(name=name, source=PersistentVolumeClaim(claim_name=req.volume_name, hotpluggable=True))
    new = msgspec.structs.replace(spec, disks=[*spec.disks, disk], volumes=[*spec.volumes, volume])
    validate_storage(new)  # the disks' limit, the serial's characters: as a manifest's are checked
    return new


def removed(spec: VMSpec, name: str, kind: str = "VM") -> VMSpec:
    """The spec without the hotplugged volume ``name`` and its disk; raises ApiError where there is
    none or it is not hotpluggable."""
    check_name(name, "volumeName", "volume name")
    volume = next((v for v in spec.volumes if v.name == name), None)
    if volume is None:
        raise ApiError(Code.NOT_FOUND, f"Unable to remove volume [{name}] because it does not exist in {kind} "
                                       f"{spec.name}", "volumeName")
    if not is_hotpluggable(volume):
        raise ApiError(Code.INVALID, f"Unable to remove volume [{name}] because it is not hotpluggable",
                       "volumeName")
    return msgspec.structs.replace(spec, disks=[d for d in spec.disks if d.name != name],
                                   volumes=[v for v in spec.volumes if v.name != name])


def boot_spec(spec: VMSpec) -> VMSpec:
    """The spec a launch boots: without its hotpluggable volumes and their disks, which its launcher
    attaches once the guest runs (launcher.hotplug), as KubeVirt attaches them; so a hotplugged volume
    whose file is not ready never holds a boot."""
    hot = hotplugged(spec)
    if not hot:
        return spec
    return msgspec.structs.replace(spec, disks=[d for d in spec.disks if d.name not in hot],
                                   volumes=[v for v in spec.volumes if v.name not in hot])


def hotplugged(spec: VMSpec) -> dict[str, str]:
    """The spec's hotpluggable volumes: their names (the disks') and the virtbus volumes they are."""
    return {v.name: v.source.claim_name for v in spec.volumes
            if isinstance(v.source, PersistentVolumeClaim) and v.source.hotpluggable}
