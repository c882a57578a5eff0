"""VirtualMachineInstanceReplicaSets (``virtbus.api.vmirs.*``) and their controller's step.

The API stores the set; the leader's controller (scheduler.workloads) keeps its count: each step
reads the set and its instances, asks scheduler.workloadplan, makes the missing instances (standalone
VMIs named <set>-<5 random>, owned by the set) and lets go of the rest (``deleting``: the VM
controller stops and removes them, as it does a deleted VMI of its own).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from proto import subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from proto.state import VMI, as_started
from proto.validation import check_name
from proto.workloads import (
    ReplicaSet,
    ReplicaSetList,
    ReplicaSetReply,
    ReplicaSetView,
    ScaleRequest,
    check_replicas,
    generate_name,
    parse_replicaset,
)
from scheduler.workloadplan import plan_replicas
from servicekit.store import Bucket, Store

log = structlog.get_logger()
Emit = Callable[[str, str, str, str], Awaitable[None]]  # kind, name, reason, message


async def replicaset_bucket(store: Store) -> Bucket[ReplicaSet]:
    return await store.control_bucket(subjects.BUCKET_REPLICASETS, ReplicaSet)


def owned(vmis: list[VMI], name: str) -> list[VMI]:
    return [v for v in vmis if v.owner == name]


def view(rs: ReplicaSet, vmis: list[VMI]) -> ReplicaSetView:
    mine = owned(vmis, rs.name)
    plan = plan_replicas(rs.replicas, mine)
    return ReplicaSetView(replica_set=rs, status=plan.status, members=sorted(v.name for v in mine))


def let_go(vmi: VMI, uid: str) -> VMI | None:
    """The instance being deleted: the VM controller stops it, then removes it (scheduler.vmplan); None
    when it is another or already going."""
    if vmi.uid != uid or vmi.deleting:
        return None
    return msgspec.structs.replace(vmi, deleting=True)


class ReplicaSetApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._bucket: Bucket[ReplicaSet] | None = None

    async def bucket(self) -> Bucket[ReplicaSet]:
        if self._bucket is None:
            self._bucket = await replicaset_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("vmirs", "apply"): self.apply, ("vmirs", "get"): self.get, ("vmirs", "list"): self.list_all,
                ("vmirs", "scale"): self.scale, ("vmirs", "delete"): self.delete}

    async def _view(self, rs: ReplicaSet) -> ReplicaSetView:
        return view(rs, [e.value for e in await self.store.vmis.items()])

    async def apply(self, body: bytes) -> ReplicaSetReply:
        """Create, or change replicas and template (instances made before keep theirs, as in KubeVirt)."""
        rs = parse_replicaset(load_manifest(body, content_type="json"))
        bucket = await self.bucket()
        existing = await bucket.get(rs.name)
        if existing is None:
            rs = msgspec.structs.replace(rs, created_at=self.clock())
            try:
                await bucket.create(rs.name, rs)
            except ApiError as exc:
                if exc.code is Code.ALREADY_EXISTS:
                    raise ApiError(Code.CONFLICT, f"{rs.name!r} was created meanwhile; apply again") from None
                raise
        else:
            rs = msgspec.structs.replace(rs, created_at=existing.value.created_at)
            if rs != existing.value:
                await bucket.update(rs.name, rs, existing.revision)
        return ReplicaSetReply(item=await self._view(rs))

    async def _named(self, name: str) -> ReplicaSet:
        check_name(name, "name", "replica set name")
        entry = await (await self.bucket()).get(name)
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"VirtualMachineInstanceReplicaSet {name!r} not found", "name")
        return entry.value

    async def get(self, body: bytes) -> ReplicaSetReply:
        return ReplicaSetReply(item=await self._view(await self._named(decode_request(body, NameRequest).name)))

    async def list_all(self, body: bytes) -> ReplicaSetList:
        decode_request(body, ListRequest)
        vmis = [e.value for e in await self.store.vmis.items()]
        sets = sorted((e.value for e in await (await self.bucket()).items()), key=lambda r: r.name)
        return ReplicaSetList(items=[view(rs, vmis) for rs in sets])

    async def scale(self, body: bytes) -> ReplicaSetReply:
        req = decode_request(body, ScaleRequest)
        replicas = check_replicas(req.replicas, "replicas")
        await self._named(req.name)
        entry = await (await self.bucket()).mutate(
            req.name, lambda rs: msgspec.structs.replace(rs, replicas=replicas))
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"VirtualMachineInstanceReplicaSet {req.name!r} not found", "name")
        return ReplicaSetReply(item=await self._view(entry.value))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        await self._named(name)
        await (await self.bucket()).delete(name)
        gone = await release_all(self.store, name)
        return Ack(message=f"VirtualMachineInstanceReplicaSet {name} deleted; "
                           f"{len(gone)} instance{'s' if len(gone) != 1 else ''} being deleted with it")


async def release_all(store: Store, name: str) -> list[str]:
    """Every instance of the set let go (its set is gone)."""
    gone = []
    for entry in await store.vmis.items():
        if entry.value.owner == name and not entry.value.deleting:
            uid = entry.value.uid
            await store.vmis.mutate(entry.key, lambda v, uid=uid: let_go(v, uid))  # type: ignore[misc]
            gone.append(entry.key)
    return gone


def instance_name(rs: str) -> str:
    return generate_name(rs)


async def reconcile_replicaset(store: Store, bucket: Bucket[ReplicaSet], name: str, now: float, emit: Emit) -> None:
    """One step of the controller for one set: make what is missing, let go of what is not wanted."""
    entry = await bucket.get(name)
    if entry is None:
        for gone in await release_all(store, name):
            await emit("VirtualMachineInstanceReplicaSet", name, "SuccessfulDelete", f"deleted instance {gone}")
        return
    rs = entry.value
    vmis = [e.value for e in await store.vmis.items()]
    plan = plan_replicas(rs.replicas, owned(vmis, name))
    for vmi_name in plan.let_go:
        vmi = next(v for v in vmis if v.name == vmi_name)
        await store.vmis.mutate(vmi_name, lambda v, uid=vmi.uid: let_go(v, uid))  # type: ignore[misc]
        log.info("instance let go", vmirs=name, vmi=vmi_name, phase=vmi.phase.value)
        await emit("VirtualMachineInstanceReplicaSet", name, "SuccessfulDelete",
                   f"deleted instance {vmi_name} ({vmi.phase.value})")
    taken = {v.name for v in vmis}
    for _ in range(plan.create):
        new_name = instance_name(name)
        while new_name in taken or await store.vms.get(new_name) is not None:
            new_name = instance_name(name)
        taken.add(new_name)
        spec = msgspec.structs.replace(rs.template, name=new_name)
        vmi = VMI(name=new_name, uid=str(uuid.uuid4()), spec=spec, created_at=now, standalone=True, owner=name,
                  **as_started(spec))
        try:
            await store.vmis.create(new_name, vmi)
        except ApiError as exc:
            if exc.code is not Code.ALREADY_EXISTS:
                raise
            continue  # the next step makes another
        log.info("instance made", vmirs=name, vmi=new_name)
        await emit("VirtualMachineInstanceReplicaSet", name, "SuccessfulCreate", f"created instance {new_name}")
