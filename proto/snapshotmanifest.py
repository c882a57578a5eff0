"""KubeVirt's VirtualMachineSnapshot and VirtualMachineRestore (snapshot.kubevirt.io), as
``virtbus apply -f`` takes them: what virtbus honours becomes the API's request; anything else is
refused with its field's full path, as the other kinds are."""

from __future__ import annotations

from typing import Any

from proto import crdmanifest, durations
from proto.crdmanifest import envelope
from proto.errors import ApiError, Code
from proto.snapshotapi import VMRestore, VMSnapshotCreate
from proto.snapshots import MAX_FAILURE_DEADLINE_S
from proto.validation import check_name

SNAPSHOT_KIND = "VirtualMachineSnapshot"
RESTORE_KIND = "VirtualMachineRestore"
KINDS = frozenset({SNAPSHOT_KIND, RESTORE_KIND})
API_VERSIONS = frozenset({"snapshot.kubevirt.io/v1beta1", "snapshot.kubevirt.io/v1alpha1"})


def _vm_ref(value: Any, field: str) -> str:
    ref = crdmanifest.obj(value, field)
    crdmanifest.only(ref, {"apiGroup", "kind", "name"}, field)
    if ref.get("apiGroup", "kubevirt.io") != "kubevirt.io":
        raise ApiError(Code.INVALID, "only kubevirt.io", f"{field}.apiGroup")
    if ref.get("kind") != "VirtualMachine":
        raise ApiError(Code.INVALID, "only a VirtualMachine is snapshotted or restored", f"{field}.kind")
    name = ref.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.INVALID, "a VM's name is required", f"{field}.name")
    check_name(name, f"{field}.name", "VM name")
    return name


def parse(doc: Any) -> VMSnapshotCreate | VMRestore:
    obj, name, spec = envelope(doc, API_VERSIONS)
    if obj.get("kind") == SNAPSHOT_KIND:
        crdmanifest.only(spec, {"source", "failureDeadline"}, "spec")  # deletionPolicy: not honoured
        deadline = spec.get("failureDeadline")
        return VMSnapshotCreate(
            vm=_vm_ref(spec.get("source"), "spec.source"), name=name,
            failure_deadline_s=None if deadline is None else durations.parse(
                deadline, "spec.failureDeadline", at_most=MAX_FAILURE_DEADLINE_S))
    if obj.get("kind") == RESTORE_KIND:
        crdmanifest.only(spec, {"target", "virtualMachineSnapshotName"}, "spec")  # patches, volumeRestorePolicy...
        vm = _vm_ref(spec.get("target"), "spec.target")
        snap = spec.get("virtualMachineSnapshotName")
        if not isinstance(snap, str):
            raise ApiError(Code.INVALID, "the snapshot's name is required", "spec.virtualMachineSnapshotName")
        check_name(snap, "spec.virtualMachineSnapshotName", "snapshot name")
        return VMRestore(snapshot=snap, vm=vm)
    raise ApiError(Code.INVALID, f"kind must be one of {sorted(KINDS)}", "kind")
