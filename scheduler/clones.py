"""VirtualMachineClones (``virtbus.api.vmclone.*``) and their controller's step.

The API checks a clone as KubeVirt's admission does (the source there, the target not, the target's
spec a valid VM's) and stores it; the leader's controller (scheduler.workloads) takes it through its
phases, each step one look at what is stored and one change, as proto.clones.decide says:
the source's VM snapshot (scheduler.snapshots), then each volume's copy (a volume restored from its
part, on the same node) and the target VM, then, once every copy is written, the snapshot goes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from proto import labelfilter, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request, encode
from proto.clones import (
    FINAL,
    PREFIX_TARGET_NAME,
    RANDOMIZE_NAMES,
    SOURCE_SNAPSHOT,
    SOURCE_VM,
    CloneCreate,
    CloneList,
    ClonePhase,
    CloneReply,
    Decision,
    Step,
    VMClone,
    checked_target,
    copies_of,
    decide,
    source_volumes,
)
from proto.errors import ApiError, Code
from proto.snapshotapi import VMRestore
from proto.snapshots import VMSnapshot
from proto.spec import VMSpec
from proto.state import VM
from proto.validation import check_name
from proto.workloads import generate_name
from scheduler.snapshots import SnapshotApi, restored_volume
from servicekit.store import Bucket, Store

log = structlog.get_logger()
KIND = "VirtualMachineClone"
Emit = Callable[[str, str, str, str], Awaitable[None]]  # kind, name, reason, message


async def clone_bucket(store: Store) -> Bucket[VMClone]:
    return await store.control_bucket(subjects.BUCKET_CLONES, VMClone)


def target_name(source: str) -> str:
    """KubeVirt's default target: clone-<source>-<5 random>, cut to a DNS-1123 label."""
    return generate_name("clone-" + source)


class CloneApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.snapshots = SnapshotApi(store, clock=clock)
        self._bucket: Bucket[VMClone] | None = None

    async def bucket(self) -> Bucket[VMClone]:
        if self._bucket is None:
            self._bucket = await clone_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("vmclone", "create"): self.create, ("vmclone", "get"): self.get,
                ("vmclone", "list"): self.list_all, ("vmclone", "delete"): self.delete,
                ("vmrestore", "create"): self.restore}

    async def restore(self, body: bytes) -> Ack:
        """KubeVirt's VirtualMachineRestore: into the snapshot's own VM (scheduler.snapshots), or, with
        a target VM that does not exist, a new VM made of the snapshot: a clone of it."""
        req = decode_request(body, VMRestore)
        check_name(req.snapshot, "snapshot", "snapshot name")
        record = (await self.store.vm_snapshots.require(req.snapshot, "VM snapshot")).value
        if req.vm is None or req.vm == record.vm:
            return await self.snapshots.vm_restore(body)
        check_name(req.vm, "vm", "VM name")
        if await self.store.vms.get(req.vm) is not None:
            raise ApiError(Code.INVALID, f"VM snapshot {record.name} is of VM {record.vm}, not {req.vm}; a restore "
                           "makes a new VM only of a name no VM has", "vm")
        if req.node is not None:
            raise ApiError(Code.INVALID, "a new VM's volumes are made on the node of the snapshot's; --node moves "
                                         "the snapshot's own VM", "node")
        name = generate_name(f"restore-{req.vm}")
        clone = (await self.create(encode(CloneCreate(name=name, source=record.name, source_kind=SOURCE_SNAPSHOT,
                                                      target=req.vm)))).item
        return Ack(message=f"VM {req.vm} is being made from VM snapshot {record.name} (vmclone/{clone.name}); it "
                           "is made stopped")

    async def create(self, body: bytes) -> CloneReply:
        req = decode_request(body, CloneCreate)
        check_name(req.name, "metadata.name", "clone name")
        check_name(req.source, "spec.source.name", "source name")
        if req.source_kind not in (SOURCE_VM, SOURCE_SNAPSHOT):
            raise ApiError(Code.INVALID, f"a clone's source is a {SOURCE_VM} or a {SOURCE_SNAPSHOT}",
                           "spec.source.kind")
        if req.volume_name_policy not in (RANDOMIZE_NAMES, PREFIX_TARGET_NAME):
            raise ApiError(Code.INVALID, f"volumeNamePolicy is {RANDOMIZE_NAMES} or {PREFIX_TARGET_NAME}",
                           "spec.volumeNamePolicy")
        labelfilter.check(req.label_filters, "spec.labelFilters")
        labelfilter.check(req.annotation_filters, "spec.annotationFilters")
        labelfilter.check(req.template_label_filters, "spec.template.labelFilters")
        source = await self._source_spec(req.source, req.source_kind)
        target = req.target or target_name(source.name)
        check_name(target, "spec.target.name", "target VM name")
        clone = VMClone(name=req.name, uid=str(uuid.uuid4()), source=req.source, source_kind=req.source_kind,
                        target=target, created_at=self.clock(), label_filters=req.label_filters,
                        annotation_filters=req.annotation_filters, template_label_filters=req.template_label_filters,
                        new_mac_addresses=req.new_mac_addresses, new_smbios_serial=req.new_smbios_serial,
                        volume_name_policy=req.volume_name_policy)
        checked_target(source, clone)
        if await self.store.vms.get(target) is not None or await self.store.vmis.get(target) is not None:
            raise ApiError(Code.ALREADY_EXISTS, f"VM {target!r} already exists; name another target",
                           "spec.target.name")
        try:
            await (await self.bucket()).create(clone.name, clone)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"clone {clone.name!r} already exists", "metadata.name") from None
            raise
        log.info("clone asked", vmclone=clone.name, source=clone.source, target=target)
        return CloneReply(item=clone)

    async def _source_spec(self, name: str, kind: str) -> VMSpec:
        if kind == SOURCE_VM:
            entry = await self.store.vms.get(name)
            if entry is None:
                raise ApiError(Code.NOT_FOUND, f"VM {name!r} not found", "spec.source.name")
            return entry.value.spec
        snap = await self.store.vm_snapshots.get(name)
        if snap is None:
            raise ApiError(Code.NOT_FOUND, f"VM snapshot {name!r} not found", "spec.source.name")
        if snap.value.spec is None:
            raise ApiError(Code.INVALID, f"VM snapshot {name} was taken before virtbus kept the VM's spec in its "
                           f"snapshots; clone VM {snap.value.vm} instead", "spec.source.name")
        return snap.value.spec

    async def _named(self, name: str) -> VMClone:
        check_name(name, "name", "clone name")
        return (await (await self.bucket()).require(name, "VirtualMachineClone")).value

    async def get(self, body: bytes) -> CloneReply:
        return CloneReply(item=await self._named(decode_request(body, NameRequest).name))

    async def list_all(self, body: bytes) -> CloneList:
        decode_request(body, ListRequest)
        return CloneList(items=sorted((e.value for e in await (await self.bucket()).items()), key=lambda c: c.name))

    async def delete(self, body: bytes) -> Ack:
        """The clone's record goes, and its own snapshot if any; its target VM and copies stay."""
        clone = await self._named(decode_request(body, NameRequest).name)
        if clone.own_snapshot and clone.snapshot is not None and await self.store.vm_snapshots.get(clone.snapshot):
            try:
                await self.snapshots.drop_vm_snapshot(clone.snapshot)
            except ApiError as exc:
                if exc.code is Code.CONFLICT:
                    raise ApiError(Code.CONFLICT, f"clone {clone.name} is taking its snapshot; delete it once "
                                   "that is done", "name") from None
                raise
        await (await self.bucket()).delete(clone.name)
        kept = "" if clone.phase is ClonePhase.PENDING else f"; VM {clone.target} and its volumes stay"
        return Ack(message=f"VirtualMachineClone {clone.name} deleted{kept}")


# --- the controller's step ----------------------------------------------------------------------------
class CloneStep:
    """One step of one clone, from what is stored now (scheduler.workloads calls it)."""

    def __init__(self, store: Store, bucket: Bucket[VMClone], emit: Emit, now: float) -> None:
        self.store = store
        self.bucket = bucket
        self.emit = emit
        self.now = now
        self.snapshots = SnapshotApi(store, clock=lambda: now)

    async def run(self, name: str) -> bool:
        """One step; True while the clone is still under way (its controller looks again soon)."""
        entry = await self.bucket.get(name)
        if entry is None or entry.value.phase in FINAL:
            return False
        clone = entry.value
        snapshot = await self._snapshot(clone)
        source = await self.store.vms.get(clone.source) if clone.source_kind == SOURCE_VM else None
        spec = snapshot.spec if snapshot is not None and snapshot.spec is not None else \
            (source.value.spec if source is not None else None)
        copies = [await self.store.volumes.get(c) for c in clone.volumes.values()]
        decision = decide(
            clone, source_exists=source is not None,
            target_exists=await self.store.vms.get(clone.target) is not None,
            has_volumes=bool(spec and source_volumes(spec)),
            snapshot=(await self.snapshots.view(snapshot)).phase if snapshot is not None else None,
            copies=[c.value.phase if c is not None else None for c in copies])
        try:
            await self._act(clone, decision, spec, snapshot)
        except ApiError as exc:
            if exc.code is Code.CONFLICT:
                return True  # written meanwhile: the next look decides again
            try:
                await self._end(clone.name, ClonePhase.FAILED, exc.message)
            except ApiError as again:
                if again.code is not Code.CONFLICT:
                    raise
                return True  # deleted or written meanwhile: the next look finds out which
            return False
        return decision.step is not Step.FAIL

    async def _snapshot(self, clone: VMClone) -> VMSnapshot | None:
        name = clone.source if clone.source_kind == SOURCE_SNAPSHOT else clone.snapshot
        found = await self.store.vm_snapshots.get(name) if name is not None else None
        return found.value if found is not None else None

    async def _act(self, clone: VMClone, decision: Decision, spec: VMSpec | None,
                   snapshot: VMSnapshot | None) -> None:
        if decision.step is Step.FAIL:
            await self._end(clone.name, ClonePhase.FAILED, decision.reason)
        elif decision.step is Step.SNAPSHOT:
            await self._snapshot_source(clone)
        elif decision.step is Step.CREATE_TARGET and spec is not None:
            await self._create_target(clone, spec, snapshot)
        elif decision.step is Step.FINISH:
            if clone.own_snapshot and clone.snapshot is not None and snapshot is not None:
                await self.snapshots.drop_vm_snapshot(clone.snapshot)
            await self._end(clone.name, ClonePhase.SUCCEEDED, "")
        elif decision.step is Step.CREATE_TARGET:
            await self._end(clone.name, ClonePhase.FAILED, f"source VM {clone.source} not found")

    async def _snapshot_source(self, clone: VMClone) -> None:
        """Its VM snapshot, named by its uid, so a step that stopped half way (a new leader) finds
        the one it took. A volume not Ready yet is waited for, the reason on the clone."""
        name = f"tmp-snapshot-{clone.uid[:8]}"
        try:
            await self.snapshots.take_vm_snapshot(clone.source, name)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS and await self.store.vm_snapshots.get(name) is not None:
                pass  # taken by the step before
            elif exc.retryable:
                if clone.reason != exc.message:
                    await self._set(clone.name, reason=exc.message)
                return
            else:
                raise
        await self._set(clone.name, phase=ClonePhase.SNAPSHOT_IN_PROGRESS, snapshot=name, own_snapshot=True,
                        reason="")
        await self.emit(KIND, clone.name, "SnapshotCreated", f"VM snapshot {name} of VM {clone.source}")

    async def _create_target(self, clone: VMClone, source: VMSpec, snapshot: VMSnapshot | None) -> None:
        target = checked_target(source, clone)
        volumes = copies_of(source, clone)
        await self._set(clone.name, phase=ClonePhase.CREATING_TARGET_VM, volumes=volumes)
        own = {t.name for t in source.data_volume_templates}
        for volume, copy in volumes.items():
            part = snapshot.volumes.get(volume) if snapshot is not None else None
            found = await self.store.snapshots.get(part) if part is not None else None
            if found is None:
                raise ApiError(Code.NOT_FOUND, f"the snapshot of volume {volume} is gone")
            existing = await self.store.volumes.get(copy)
            if existing is not None:
                if existing.value.snapshot != found.value.name:
                    raise ApiError(Code.ALREADY_EXISTS, f"volume {copy} already exists")
                continue
            made = restored_volume(found.value, copy, found.value.node, str(uuid.uuid4()), self.now)
            if volume in own:
                made = msgspec.structs.replace(made, owner_vm=clone.target)  # goes with the target, as its template's
            await self.store.volumes.create(copy, made)
        existing_vm = await self.store.vms.get(clone.target)
        if existing_vm is None:
            await self.store.vms.create(clone.target, VM(spec=target, created_at=self.now))
        elif existing_vm.value.spec != target:
            raise ApiError(Code.ALREADY_EXISTS, f"target VM {clone.target} already exists")
        await self.emit(KIND, clone.name, "TargetVMCreated", f"VM {clone.target} created from {clone.source}")
        if volumes:
            await self._set(clone.name, phase=ClonePhase.RESTORE_IN_PROGRESS)
        else:
            await self._end(clone.name, ClonePhase.SUCCEEDED, "")

    async def _set(self, name: str, **changes: object) -> None:
        def change(clone: VMClone) -> VMClone:
            return msgspec.structs.replace(clone, **changes)

        if await self.bucket.mutate(name, change) is None:
            raise ApiError(Code.CONFLICT, f"clone {name} was deleted meanwhile")

    async def _end(self, name: str, phase: ClonePhase, reason: str) -> None:
        entry = await self.bucket.get(name)
        await self._set(name, phase=phase, reason=reason, finished_at=self.now)
        if phase is ClonePhase.FAILED:
            clone = entry.value if entry is not None else None
            if clone is not None and clone.own_snapshot and clone.snapshot is not None \
                    and await self.store.vm_snapshots.get(clone.snapshot) is not None:
                try:  # what it copied stays (KubeVirt's too); its own snapshot is of no use to anyone
                    await self.snapshots.drop_vm_snapshot(clone.snapshot)
                except ApiError as exc:
                    log.warning("a failed clone's snapshot stays", vmclone=name, snapshot=clone.snapshot,
                                error=exc.message)
            log.warning("clone failed", vmclone=name, reason=reason)
            await self.emit(KIND, name, "CloneFailed", reason)
        else:
            log.info("clone succeeded", vmclone=name)
            await self.emit(KIND, name, "CloneSucceeded", "the target VM and its volumes are ready")
