"""Snapshots and restores (``virtbus.api.snapshot.*``, ``volume.restore``, ``vmsnapshot.*``,
``vmrestore.create``) and the node API verbs on which the node holding a volume reports how its
snapshot or its population goes (proto.snapshots has the rules)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
import nats.js.errors
import structlog

from proto import subjects
from proto.api import Ack, ListRequest, NameRequest, VolumeReply, decode_request
from proto.errors import ApiError, Code
from proto.quantity import parse_bytes
from proto.snapshotapi import (
    SnapshotCreate,
    SnapshotList,
    SnapshotReply,
    VMRestore,
    VMSnapshotCreate,
    VMSnapshotList,
    VMSnapshotView,
    VolumeRestore,
)
from proto.snapshots import (
    DEFAULT_FAILURE_DEADLINE_S,
    MAX_FAILURE_DEADLINE_S,
    VERB_SNAPSHOT_PROGRESS,
    VERB_VOLUME_PROGRESS,
    ProgressReply,
    SnapshotPhase,
    SnapshotProgress,
    VMSnapshot,
    VolumeProgress,
    VolumeSnapshot,
    apply_snapshot_progress,
    apply_volume_progress,
    orphaned,
    snapshot_name_for,
    vm_snapshot_phase,
)
from proto.spec import claims
from proto.state import FINAL_PHASES, PersistentVolume, Progress, VolumePhase
from proto.validation import check_name
from servicekit.endpoints import Endpoint
from servicekit.store import Store

log = structlog.get_logger()
Handler = Callable[[bytes], Awaitable[object]]


def default_name(base: str, now: float) -> str:
    """Pure: <base>-<unix time>, cut so it stays a DNS-1123 label."""
    suffix = f"-{int(now)}"
    return base[:63 - len(suffix)].rstrip("-") + suffix


def restored_volume(snap: VolumeSnapshot, name: str, node: str | None, uid: str, now: float) -> PersistentVolume:
    """Pure: the new volume a restore makes: the snapshot's volume's size, the snapshot its first content."""
    return PersistentVolume(name=name, uid=uid, size=snap.volume_size, created_at=now, snapshot=snap.name, node=node)


def swapped_in(volume: PersistentVolume, snap: VolumeSnapshot, uid: str, node: str | None = None) -> PersistentVolume:
    """Pure: a VM restore's volume: a new file (new uid) with the snapshot's content, on its node or on
    ``node`` (a new file may be anywhere: how a VM's volumes move); the old file is kept
    (previous_uid) until the new one is Ready, so a restore failing half way loses nothing."""
    size = volume.size if parse_bytes(volume.size) >= parse_bytes(snap.volume_size) else snap.volume_size
    return msgspec.structs.replace(volume, uid=uid, snapshot=snap.name, image=None, size=size,
                                   node=node or volume.node,
                                   phase=VolumePhase.PENDING, progress=Progress(), reason="",
                                   previous_uid=volume.previous_uid or volume.uid)


class SnapshotApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def table(self) -> dict[tuple[str, str], Handler]:
        return {
            ("snapshot", "create"): self.create, ("snapshot", "get"): self.get, ("snapshot", "list"): self.list_all,
            ("snapshot", "delete"): self.delete, ("volume", "restore"): self.restore,
            ("vmsnapshot", "create"): self.vm_create, ("vmsnapshot", "get"): self.vm_get,
            ("vmsnapshot", "list"): self.vm_list, ("vmsnapshot", "delete"): self.vm_delete,
        }

    # --- volume snapshots ----------------------------------------------------------------------------
    async def _volume_to_snapshot(self, name: str, field: str) -> PersistentVolume:
        volume = (await self.store.volumes.require(name, "volume")).value
        if volume.node is None:
            raise ApiError(Code.INVALID, f"volume {name} has no content yet (no VM has used it, and it was made "
                           "without --node)", field)
        if volume.phase is not VolumePhase.READY:
            raise ApiError(Code.UNAVAILABLE, f"volume {name} is {volume.phase.value}, not Ready yet", field)
        return volume

    async def _make(self, name: str, volume: PersistentVolume, group: str | None, field: str) -> VolumeSnapshot:
        assert volume.node is not None
        snap = VolumeSnapshot(name=name, uid=str(uuid.uuid4()), volume=volume.name, volume_uid=volume.uid,
                              volume_size=volume.size, node=volume.node, created_at=self.clock(), group=group)
        try:
            await self.store.snapshots.create(name, snap)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"snapshot {name!r} already exists", field) from None
            raise
        log.info("snapshot asked", snapshot=name, volume=volume.name, node=volume.node, group=group)
        return snap

    async def create(self, body: bytes) -> SnapshotReply:
        req = decode_request(body, SnapshotCreate)
        check_name(req.volume, "volume", "volume name")
        name = req.name or default_name(req.volume, self.clock())
        check_name(name, "name", "snapshot name")
        volume = await self._volume_to_snapshot(req.volume, "volume")
        return SnapshotReply(item=await self._make(name, volume, None, "name"))

    async def get(self, body: bytes) -> SnapshotReply:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "snapshot name")
        return SnapshotReply(item=(await self.store.snapshots.require(name, "snapshot")).value)

    async def list_all(self, body: bytes) -> SnapshotList:
        decode_request(body, ListRequest)
        return SnapshotList(items=sorted((e.value for e in await self.store.snapshots.items()), key=lambda s: s.name))

    async def _drop(self, entry_name: str) -> None:
        entry = await self.store.snapshots.get(entry_name)
        if entry is None:
            return
        if entry.value.phase is SnapshotPhase.IN_PROGRESS:
            # its node is uploading it: gone now, the object would stay behind (a node purges nothing)
            raise ApiError(Code.CONFLICT, f"snapshot {entry_name} is being taken; delete it once it is Ready or "
                                          "Failed", "name")
        await self.store.snapshots.delete(entry_name, entry.revision)
        try:
            await self.store.snapshot_objects.delete(entry.value.uid)
        except nats.js.errors.NotFoundError:
            pass  # never uploaded
        log.info("snapshot deleted", snapshot=entry_name)

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "snapshot name")
        entry = await self.store.snapshots.require(name, "snapshot")
        if entry.value.group is not None:
            raise ApiError(Code.CONFLICT, f"snapshot {name} is part of VM snapshot {entry.value.group}; delete that "
                           "one", "name")
        await self._drop(name)
        return Ack(message=f"snapshot {name} deleted")

    async def restore(self, body: bytes) -> VolumeReply:
        req = decode_request(body, VolumeRestore)
        check_name(req.snapshot, "snapshot", "snapshot name")
        check_name(req.name, "name", "volume name")
        if req.node is not None:
            check_name(req.node, "node", "node name")
            if await self.store.nodes.get(req.node) is None:
                raise ApiError(Code.INVALID, f"node {req.node!r} is not registered", "node")
        snap = (await self.store.snapshots.require(req.snapshot, "snapshot")).value
        if snap.phase is not SnapshotPhase.READY:
            raise ApiError(Code.UNAVAILABLE, f"snapshot {snap.name} is {snap.phase.value}, not Ready", "snapshot")
        volume = restored_volume(snap, req.name, req.node, str(uuid.uuid4()), self.clock())
        try:
            await self.store.volumes.create(req.name, volume)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"volume {req.name!r} already exists", "name") from None
            raise
        log.info("volume restored", volume=req.name, snapshot=snap.name, node=req.node)
        return VolumeReply(item=volume)

    # --- VM snapshots (KubeVirt's VirtualMachineSnapshot and VirtualMachineRestore) -----------------
    async def vm_create(self, body: bytes) -> VMSnapshotView:
        req = decode_request(body, VMSnapshotCreate)
        check_name(req.vm, "vm", "VM name")
        name = req.name or default_name(req.vm, self.clock())
        check_name(name, "name", "snapshot name")
        deadline = DEFAULT_FAILURE_DEADLINE_S if req.failure_deadline_s is None else req.failure_deadline_s
        if not 0 <= deadline <= MAX_FAILURE_DEADLINE_S:  # NaN too
            raise ApiError(Code.INVALID, f"a failure deadline from 0 (none) to {MAX_FAILURE_DEADLINE_S:.0f} s",
                           "failureDeadlineS")
        return await self.take_vm_snapshot(req.vm, name, failure_deadline_s=deadline)

    async def take_vm_snapshot(self, vm_name: str, name: str, *,
                               failure_deadline_s: float = DEFAULT_FAILURE_DEADLINE_S) -> VMSnapshotView:
        """A VM snapshot of every volume of the VM, with the VM's spec as it is now."""
        vm = (await self.store.vms.require(vm_name, "VM")).value
        names = sorted({c for _, c in claims(vm.spec.volumes)})
        if not names:
            raise ApiError(Code.INVALID, f"VM {vm_name} has no volumes (persistentVolumeClaim or dataVolume) to "
                           "snapshot", "vm")
        volumes = [await self._volume_to_snapshot(n, "vm") for n in names]
        parts = {v.name: snapshot_name_for(name, v.name) for v in volumes}
        for part in parts.values():
            if await self.store.snapshots.get(part) is not None:
                raise ApiError(Code.ALREADY_EXISTS, f"snapshot {part!r} already exists", "name")
        record = VMSnapshot(name=name, uid=str(uuid.uuid4()), vm=vm_name, created_at=self.clock(), volumes=parts,
                            spec=vm.spec, failure_deadline_s=failure_deadline_s)
        try:
            await self.store.vm_snapshots.create(name, record)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"VM snapshot {name!r} already exists", "name") from None
            raise
        made = [await self._make(parts[v.name], v, name, "name") for v in volumes]
        return VMSnapshotView(item=record, phase=vm_snapshot_phase(list(made)), parts=made)

    async def view(self, record: VMSnapshot) -> VMSnapshotView:
        parts = [await self.store.snapshots.get(p) for p in record.volumes.values()]
        return VMSnapshotView(item=record, phase=vm_snapshot_phase([p.value if p else None for p in parts]),
                              parts=[p.value for p in parts if p is not None])

    async def vm_get(self, body: bytes) -> VMSnapshotView:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "snapshot name")
        return await self.view((await self.store.vm_snapshots.require(name, "VM snapshot")).value)

    async def vm_list(self, body: bytes) -> VMSnapshotList:
        decode_request(body, ListRequest)
        records = sorted((e.value for e in await self.store.vm_snapshots.items()), key=lambda s: s.name)
        return VMSnapshotList(items=[await self.view(r) for r in records])

    async def vm_delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "snapshot name")
        await self.drop_vm_snapshot(name)
        return Ack(message=f"VM snapshot {name} deleted")

    async def drop_vm_snapshot(self, name: str) -> None:
        """The VM snapshot and its volumes' snapshots go; Conflict while one is being taken."""
        entry = await self.store.vm_snapshots.require(name, "VM snapshot")
        for part in entry.value.volumes.values():
            found = await self.store.snapshots.get(part)
            if found is not None and found.value.phase is SnapshotPhase.IN_PROGRESS:
                raise ApiError(Code.CONFLICT, f"snapshot {part} is being taken; delete {name} once it is Ready or "
                                              "Failed", "name")
        for part in entry.value.volumes.values():
            await self._drop(part)
        await self.store.vm_snapshots.delete(name, entry.revision)

    async def vm_restore(self, body: bytes) -> Ack:
        """Every volume of the snapshot gets its content back, as a new file (new uid) swapped in."""
        req = decode_request(body, VMRestore)
        check_name(req.snapshot, "snapshot", "snapshot name")
        record = (await self.store.vm_snapshots.require(req.snapshot, "VM snapshot")).value
        if req.vm is not None and req.vm != record.vm:
            raise ApiError(Code.INVALID, f"VM snapshot {record.name} is of VM {record.vm}, not {req.vm}", "vm")
        if req.node is not None:
            check_name(req.node, "node", "node name")
            if await self.store.nodes.get(req.node) is None:
                raise ApiError(Code.INVALID, f"node {req.node!r} is not registered", "node")
        if await self.store.vms.get(record.vm) is None:
            raise ApiError(Code.NOT_FOUND, f"VM {record.vm} not found", "vm")
        instance = await self.store.vmis.get(record.vm)
        if instance is not None and instance.value.phase not in FINAL_PHASES:
            raise ApiError(Code.CONFLICT, f"VM {record.vm} is running; stop it first (virtbus stop {record.vm} --wait)",
                           "vm")
        snaps: list[VolumeSnapshot] = []
        for volume, part in sorted(record.volumes.items()):
            found = await self.store.snapshots.get(part)
            if found is None or found.value.phase is not SnapshotPhase.READY:
                raise ApiError(Code.INVALID, f"snapshot {part} of volume {volume} is not Ready", "snapshot")
            current = await self.store.volumes.get(volume)
            if current is None:
                raise ApiError(Code.NOT_FOUND, f"volume {volume} is gone; restore it with: virtbus volume restore "
                               f"{part} --to {volume}", "snapshot")
            if current.value.phase not in (VolumePhase.READY, VolumePhase.FAILED):
                raise ApiError(Code.CONFLICT, f"volume {volume} is {current.value.phase.value}", "snapshot")
            snaps.append(found.value)
        for snap in snaps:
            new_uid = str(uuid.uuid4())

            def swap(v: PersistentVolume, s: VolumeSnapshot = snap, u: str = new_uid) -> PersistentVolume:
                return swapped_in(v, s, u, req.node)

            await self.store.volumes.mutate(snap.volume, swap)
        log.info("VM restored", vm=record.vm, snapshot=record.name)
        where = f"node {req.node}" if req.node else "their node"
        return Ack(message=f"VM {record.vm}: volumes {', '.join(s.volume for s in snaps)} restored from "
                           f"{record.name}; {where} writes them before the VM starts")


class SnapshotNodeApi:
    """The node holding a volume reports its snapshot's and its population's progress."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(f"node-{VERB_SNAPSHOT_PROGRESS}", f"{subjects.NODEAPI_PREFIX}.*.{VERB_SNAPSHOT_PROGRESS}",
                         subject_handler=self.snapshot_progress),
                Endpoint(f"node-{VERB_VOLUME_PROGRESS}", f"{subjects.NODEAPI_PREFIX}.*.{VERB_VOLUME_PROGRESS}",
                         subject_handler=self.volume_progress)]

    async def snapshot_progress(self, subject: str, body: bytes) -> ProgressReply:
        node = subjects.nodeapi_node(subject)
        report = decode_request(body, SnapshotProgress)
        check_name(report.snapshot, "snapshot", "snapshot name")
        now = self.clock()
        current = await self.store.snapshots.get(report.snapshot)
        gone = False
        if current is not None and current.value.taken_by.startswith("vmi/"):
            vmi = await self.store.vmis.get(current.value.taken_by.removeprefix("vmi/"))
            gone = orphaned(current.value, [vmi.value] if vmi is not None else [])
        entry = await self.store.snapshots.mutate(
            report.snapshot, lambda s: apply_snapshot_progress(s, report, node, now, taker_gone=gone))
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"snapshot {report.snapshot} not found")
        return ProgressReply(applied=entry.value.phase is report.phase, phase=entry.value.phase.value)

    async def volume_progress(self, subject: str, body: bytes) -> ProgressReply:
        node = subjects.nodeapi_node(subject)
        report = decode_request(body, VolumeProgress)
        check_name(report.volume, "volume", "volume name")
        entry = await self.store.volumes.mutate(report.volume, lambda v: apply_volume_progress(v, report, node))
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"volume {report.volume} not found")
        return ProgressReply(applied=entry.value.phase is report.phase, phase=entry.value.phase.value)
