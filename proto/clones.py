"""KubeVirt's VirtualMachineClone (clone.kubevirt.io): a new VM made from another VM, or from a VM
snapshot, with copies of its volumes. The record, the API's messages and the pure rules; the
manifest is proto.clonemanifest's, the controller's shell scheduler.clones.

As KubeVirt does it: the source VM is snapshotted (a VirtualMachineSnapshot of the clone's own,
``tmp-snapshot-<uid>``), the target VM is made from the source's spec with each volume restored
from that snapshot under a new name, and the snapshot goes once the copies are written. The target
is made stopped (runStrategy Halted), with its own identity: its interfaces get the MAC addresses the
clone names (else new ones), its SMBIOS serial the one it names (else none), its firmware UUID its
own (from its name), and its labels pass the clone's filters.
"""

from __future__ import annotations

import enum

import msgspec

from proto.api import Message
from proto.errors import ApiError, Code
from proto.labelfilter import kept
from proto.snapshots import SnapshotPhase
from proto.spec import Ephemeral, Firmware, PersistentVolumeClaim, RunStrategy, VMSpec, claims
from proto.state import State, VolumePhase
from proto.validation import validate_vm

SOURCE_VM = "VirtualMachine"
SOURCE_SNAPSHOT = "VirtualMachineSnapshot"
RANDOMIZE_NAMES = "RandomizeNames"
PREFIX_TARGET_NAME = "PrefixTargetName"
HA_ANNOTATION = "virtbus.io/high-availability"  # the one annotation a VM keeps here (proto.fencing)


class ClonePhase(enum.StrEnum):
    PENDING = ""  # KubeVirt's PhaseUnset: stored, not yet looked at
    SNAPSHOT_IN_PROGRESS = "SnapshotInProgress"
    CREATING_TARGET_VM = "CreatingTargetVM"
    RESTORE_IN_PROGRESS = "RestoreInProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINAL = frozenset({ClonePhase.SUCCEEDED, ClonePhase.FAILED})


class VMClone(State, frozen=True):
    """One clone, in KV bucket ``vmclones``. ``label_filters`` None keeps every label (KubeVirt's nil);
    [] keeps none."""

    name: str
    uid: str
    source: str
    target: str
    created_at: float
    source_kind: str = SOURCE_VM
    label_filters: list[str] | None = None
    annotation_filters: list[str] | None = None
    template_label_filters: list[str] | None = None
    new_mac_addresses: dict[str, str] = {}
    new_smbios_serial: str | None = msgspec.field(default=None, name="newSMBiosSerial")  # KubeVirt's spelling
    volume_name_policy: str = RANDOMIZE_NAMES
    phase: ClonePhase = ClonePhase.PENDING
    snapshot: str | None = None  # the VM snapshot its volumes are copied from
    own_snapshot: bool = False  # made by this clone, and deleted by it once the copies are written
    volumes: dict[str, str] = {}  # source volume -> the target's copy of it
    reason: str = ""
    finished_at: float | None = None


class CloneCreate(Message, frozen=True):
    """``virtbus.api.vmclone.create``: what a VirtualMachineClone manifest says (proto.clonemanifest)."""

    name: str
    source: str
    source_kind: str = SOURCE_VM
    target: str | None = None  # default: clone-<source>-<5 random>, as KubeVirt names it
    label_filters: list[str] | None = None
    annotation_filters: list[str] | None = None
    template_label_filters: list[str] | None = None
    new_mac_addresses: dict[str, str] = {}
    new_smbios_serial: str | None = msgspec.field(default=None, name="newSMBiosSerial")  # KubeVirt's spelling
    volume_name_policy: str = RANDOMIZE_NAMES


class CloneReply(Message, frozen=True):
    item: VMClone


class CloneList(Message, frozen=True):
    items: list[VMClone]


# --- the target -------------------------------------------------------------------------------------
def copy_name(policy: str, target: str, volume: str, uid: str) -> str:
    """Pure: the name of the target's copy of a volume, as KubeVirt's restore names it: random
    (restore-<8 of the clone's uid>-<volume>, cut to 63 characters) or <target>-<volume>, refused when
    over 63."""
    if policy != PREFIX_TARGET_NAME:
        return f"restore-{uid[:8]}-{volume}"[:63].rstrip("-")
    name = f"{target}-{volume}"
    if len(name) > 63:
        raise ApiError(Code.INVALID, f"the copy of volume {volume!r} would be named {name!r}, over 63 characters; "
                                     f"use a shorter target name or volumeNamePolicy {RANDOMIZE_NAMES}",
                       "spec.volumeNamePolicy")
    return name


def target_spec(source: VMSpec, clone: VMClone, copies: dict[str, str]) -> VMSpec:
    """Pure: the target VM's spec: the source's, stopped, named, its identity its own, its volumes
    the copies (a dataVolumeTemplate's copy is the target's own, deleted with it)."""
    def moved(claim: str) -> str:
        return copies.get(claim, claim)

    volumes = []
    for volume in source.volumes:
        if isinstance(volume.source, PersistentVolumeClaim):
            claim: PersistentVolumeClaim | Ephemeral = PersistentVolumeClaim(claim_name=moved(volume.source.claim_name))
            volume = msgspec.structs.replace(volume, source=claim)
        elif isinstance(volume.source, Ephemeral):
            volume = msgspec.structs.replace(volume, source=Ephemeral(claim_name=moved(volume.source.claim_name)))
        volumes.append(volume)
    interfaces = [msgspec.structs.replace(i, mac_address=clone.new_mac_addresses.get(i.name))
                  for i in source.interfaces]
    # KubeVirt's clone gives the target a serial of its own (or none) and no firmware UUID: the
    # target's is then its own, from its name (proto.machine.firmware_uuid)
    firmware = None if source.firmware is None else msgspec.structs.replace(source.firmware, uuid=None, serial=None)
    if clone.new_smbios_serial is not None:
        firmware = Firmware(serial=clone.new_smbios_serial)
    if firmware == Firmware():
        firmware = None
    annotations = {HA_ANNOTATION: "true"} if source.high_availability else {}
    return msgspec.structs.replace(
        source, name=clone.target, run_strategy=RunStrategy.HALTED,
        vm_labels=kept(source.vm_labels, clone.label_filters),
        labels=kept(source.labels, clone.template_label_filters),
        high_availability=bool(kept(annotations, clone.annotation_filters)),
        volumes=volumes, interfaces=interfaces, firmware=firmware,
        data_volume_templates=[msgspec.structs.replace(t, name=moved(t.name)) for t in source.data_volume_templates])


def source_volumes(source: VMSpec) -> list[str]:
    """The virtbus volumes a clone copies: every one the source's volumes name."""
    return sorted({claim for _, claim in claims(source.volumes)})


def copies_of(source: VMSpec, clone: VMClone) -> dict[str, str]:
    """Pure: each volume the clone copies -> its copy's name; refused if two would share one."""
    copies = {v: copy_name(clone.volume_name_policy, clone.target, v, clone.uid) for v in source_volumes(source)}
    if len(set(copies.values())) < len(copies):
        raise ApiError(Code.INVALID, f"two of VM {source.name}'s volumes would be copied under one name, cut to 63 "
                                     f"characters; use volumeNamePolicy {PREFIX_TARGET_NAME}", "spec.volumeNamePolicy")
    return copies


def checked_target(source: VMSpec, clone: VMClone) -> VMSpec:
    """The target's spec, checked as any VM's is, a fault blamed on the clone's field that made it."""
    names = [i.name for i in source.interfaces]
    for iface in clone.new_mac_addresses:
        if iface not in names:
            raise ApiError(Code.INVALID, f"VM {source.name} has no interface {iface!r} "
                                         f"(it has: {', '.join(sorted(names)) or 'none'})",
                           f"spec.newMacAddresses.{iface}")
    copies = copies_of(source, clone)
    target = target_spec(source, clone, copies)
    try:
        return validate_vm(target)
    except ApiError as exc:
        field = exc.field or ""
        if field == "spec.firmware.serial":
            field = "spec.newSMBiosSerial"
        elif field.startswith("spec.interfaces[") and field.endswith("].macAddress"):
            field = f"spec.newMacAddresses.{names[int(field[len('spec.interfaces['):].split(']')[0])]}"
        else:
            field = "spec.target.name" if field == "spec.name" else "spec"
        raise ApiError(exc.code, f"the clone's VM {clone.target}: {exc.message}", field) from None


# --- the controller's rules -------------------------------------------------------------------------
class Step(enum.StrEnum):
    WAIT = "wait"  # nothing to do until something changes
    FAIL = "fail"  # the clone ends Failed with the reason
    SNAPSHOT = "snapshot"  # take the VM snapshot of the source
    CREATE_TARGET = "create-target"  # the copies and the target VM
    FINISH = "finish"  # the copies are written: drop its own snapshot, Succeeded


class Decision(msgspec.Struct, frozen=True):
    step: Step
    reason: str = ""


def decide(clone: VMClone, *, source_exists: bool, target_exists: bool, has_volumes: bool,
           snapshot: SnapshotPhase | None, copies: list[VolumePhase | None]) -> Decision:
    """Pure: the clone's next step, from what is stored now. ``snapshot`` is its VM snapshot's phase
    (None: no such snapshot); ``copies`` the phases of the target's copies (None: gone)."""
    if clone.phase in FINAL:
        return Decision(Step.WAIT)
    if clone.phase is ClonePhase.PENDING:
        if target_exists:
            return Decision(Step.FAIL, f"target VM {clone.target} already exists")
        if clone.source_kind == SOURCE_SNAPSHOT:
            if snapshot is None or snapshot is SnapshotPhase.FAILED:
                return Decision(Step.FAIL, f"VM snapshot {clone.source} {'failed' if snapshot else 'not found'}")
            return Decision(Step.CREATE_TARGET) if snapshot is SnapshotPhase.READY else Decision(Step.WAIT)
        if not source_exists:
            return Decision(Step.FAIL, f"source VM {clone.source} not found")
        return Decision(Step.SNAPSHOT) if has_volumes else Decision(Step.CREATE_TARGET)
    if clone.phase is ClonePhase.SNAPSHOT_IN_PROGRESS:
        if snapshot is None:
            return Decision(Step.FAIL, f"VM snapshot {clone.snapshot} is gone")
        if snapshot is SnapshotPhase.FAILED:
            return Decision(Step.FAIL, f"VM snapshot {clone.snapshot} failed")
        if snapshot is not SnapshotPhase.READY:
            return Decision(Step.WAIT)
        if target_exists:
            return Decision(Step.FAIL, f"target VM {clone.target} already exists")
        return Decision(Step.CREATE_TARGET)
    if clone.phase is ClonePhase.CREATING_TARGET_VM:
        return Decision(Step.CREATE_TARGET)  # it stopped half way (a new leader): the rest of it
    if any(c is None for c in copies):
        return Decision(Step.FAIL, "a copy of a volume was deleted before it was written")
    if any(c is VolumePhase.FAILED for c in copies):
        return Decision(Step.FAIL, "a copy of a volume failed to be written; see virtbus volume list")
    if all(c is VolumePhase.READY for c in copies):
        return Decision(Step.FINISH)
    return Decision(Step.WAIT)
