"""VirtualMachinePools (``virtbus.api.vmpool.*``) and their controller's step.

A pool's VMs are ordinary VMs named <pool>-<index>, owned by the pool (``VM.owner``), each with its
own volumes from the template's dataVolumeTemplates (named <template>-<pool>-<index>, owned by the
VM and deleted with it). The VM controller runs each by its run strategy; the pool only keeps the
count: a missing VM is made again under the lowest free index, scaling down deletes the highest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from proto import subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest, parse_manifest_obj
from proto.spec import VMSpec
from proto.state import VM, VMI
from proto.validation import check_name
from proto.workloads import (
    Pool,
    PoolList,
    PoolReply,
    PoolView,
    ScaleRequest,
    check_replicas,
    pool_field,
    pool_index,
    pool_template,
    pool_vm_manifest,
    pool_vm_spec,
)
from scheduler import vmdelete
from scheduler.volumes import VolumeApi
from scheduler.workloadplan import plan_pool, pool_status
from servicekit.store import Bucket, Store

log = structlog.get_logger()
Emit = Callable[[str, str, str, str], Awaitable[None]]  # kind, name, reason, message
Expand = Callable[[object], Awaitable[object]]  # a VM manifest with its instancetype and preference applied


async def pool_bucket(store: Store) -> Bucket[Pool]:
    return await store.control_bucket(subjects.BUCKET_POOLS, Pool)


def view(pool: Pool, vms: list[VM], vmis: dict[str, VMI]) -> PoolView:
    mine = sorted((vm.spec.name for vm in vms if vm.owner == pool.name),
                  key=lambda n: (pool_index(pool.name, n) or 0, n))
    return PoolView(pool=pool, status=pool_status((vmis.get(n) for n in mine), len(mine)), members=mine)


async def _expand_none(manifest: object) -> object:
    return manifest


class PoolApi:
    def __init__(self, store: Store, *, expand: Expand = _expand_none,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.expand = expand
        self.clock = clock
        self._bucket: Bucket[Pool] | None = None

    async def bucket(self) -> Bucket[Pool]:
        if self._bucket is None:
            self._bucket = await pool_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("vmpool", "apply"): self.apply, ("vmpool", "get"): self.get, ("vmpool", "list"): self.list_all,
                ("vmpool", "scale"): self.scale, ("vmpool", "delete"): self.delete}

    async def _view(self, pool: Pool) -> PoolView:
        vms = [e.value for e in await self.store.vms.items()]
        return view(pool, vms, {e.key: e.value for e in await self.store.vmis.items()})

    async def parse(self, body: bytes) -> Pool:
        name, replicas, chosen, manifest = pool_vm_manifest(load_manifest(body, content_type="json"))
        try:
            spec = parse_manifest_obj(await self.expand(manifest))
        except ApiError as err:
            message = err.message.replace("spec.", "spec.virtualMachineTemplate.spec.") \
                if err.field != "metadata.name" else err.message
            raise ApiError(err.code, message, pool_field(err.field)) from None
        if not isinstance(spec, VMSpec):
            raise ApiError(Code.BAD_REQUEST, "a pool's template is a VirtualMachine", "spec.virtualMachineTemplate")
        return Pool(name=name, replicas=replicas, selector=chosen, template=pool_template(name, spec))

    async def apply(self, body: bytes) -> PoolReply:
        """Create, or change replicas and template (VMs made before keep their spec, as in KubeVirt)."""
        pool = await self.parse(body)
        bucket = await self.bucket()
        existing = await bucket.get(pool.name)
        if existing is None:
            pool = msgspec.structs.replace(pool, created_at=self.clock())
            try:
                await bucket.create(pool.name, pool)
            except ApiError as exc:
                if exc.code is Code.ALREADY_EXISTS:
                    raise ApiError(Code.CONFLICT, f"{pool.name!r} was created meanwhile; apply again") from None
                raise
        else:
            pool = msgspec.structs.replace(pool, created_at=existing.value.created_at)
            if pool != existing.value:
                await bucket.update(pool.name, pool, existing.revision)
        return PoolReply(item=await self._view(pool))

    async def _named(self, name: str) -> Pool:
        check_name(name, "name", "pool name")
        entry = await (await self.bucket()).get(name)
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"VirtualMachinePool {name!r} not found", "name")
        return entry.value

    async def get(self, body: bytes) -> PoolReply:
        return PoolReply(item=await self._view(await self._named(decode_request(body, NameRequest).name)))

    async def list_all(self, body: bytes) -> PoolList:
        decode_request(body, ListRequest)
        vms = [e.value for e in await self.store.vms.items()]
        vmis = {e.key: e.value for e in await self.store.vmis.items()}
        pools = sorted((e.value for e in await (await self.bucket()).items()), key=lambda p: p.name)
        return PoolList(items=[view(p, vms, vmis) for p in pools])

    async def scale(self, body: bytes) -> PoolReply:
        req = decode_request(body, ScaleRequest)
        replicas = check_replicas(req.replicas, "replicas")
        await self._named(req.name)
        entry = await (await self.bucket()).mutate(req.name, lambda p: msgspec.structs.replace(p, replicas=replicas))
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"VirtualMachinePool {req.name!r} not found", "name")
        return PoolReply(item=await self._view(entry.value))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        await self._named(name)
        await (await self.bucket()).delete(name)
        gone = [vm for vm in await _owned(self.store, name)]
        for vm in gone:
            await delete_vm(self.store, vm)
        return Ack(message=f"VirtualMachinePool {name} deleted" +
                           (f"; VMs {', '.join(gone)} and their volumes deleted with it" if gone else ""))


async def _owned(store: Store, pool: str) -> list[str]:
    return sorted(e.key for e in await store.vms.items() if e.value.owner == pool)


async def delete_vm(store: Store, name: str) -> None:
    """A pool's VM goes as ``virtbus delete vm`` has it go: its node ports, floating IPs and own volumes too."""
    entry = await store.vms.get(name)
    if entry is None:
        return
    try:
        await vmdelete.delete_vm(store, entry)
    except ApiError as exc:
        if exc.code is not Code.CONFLICT:
            raise
        # it changed meanwhile: the next step decides again


async def reconcile_pool(store: Store, bucket: Bucket[Pool], name: str, now: float, emit: Emit) -> None:
    """One step of the controller for one pool."""
    entry = await bucket.get(name)
    if entry is None:
        for vm in await _owned(store, name):
            await delete_vm(store, vm)
            await emit("VirtualMachinePool", name, "SuccessfulDelete", f"deleted VM {vm}")
        return
    pool = entry.value
    members = {e.key: pool_index(name, e.key) for e in await store.vms.items() if e.value.owner == name}
    plan = plan_pool(pool.replicas, members)
    for vm_name in plan.delete:
        await delete_vm(store, vm_name)
        log.info("pool VM deleted", vmpool=name, vm=vm_name)
        await emit("VirtualMachinePool", name, "SuccessfulDelete", f"deleted VM {vm_name}")
    volumes = VolumeApi(store, clock=lambda: now)
    for index in plan.create:
        spec = pool_vm_spec(pool, index)
        if await store.vms.get(spec.name) is not None or await store.vmis.get(spec.name) is not None:
            log.warning("pool VM name taken by another", vmpool=name, vm=spec.name)
            continue  # someone else's: KubeVirt waits too; the pool stays short until it goes
        await volumes.for_vm(spec)
        try:
            await store.vms.create(spec.name, VM(spec=spec, created_at=now, owner=name))
        except ApiError as exc:
            if exc.code is not Code.ALREADY_EXISTS:
                raise
            continue
        log.info("pool VM made", vmpool=name, vm=spec.name)
        await emit("VirtualMachinePool", name, "SuccessfulCreate", f"created VM {spec.name}")
