"""The controller of the workload kinds, run by the leader beside the VM controller
(scheduler.controllers starts and stops it with each term).

One serial worker per set (servicekit.workqueue): a change of the set, or of any VMI or VM it owns,
kicks it; a resync every few seconds catches what a watch cannot say (a deleted member's owner).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from proto.clones import VMClone
from proto.state import VM, VMI
from proto.workloads import Pool, ReplicaSet
from scheduler.clones import CloneStep, clone_bucket
from scheduler.pools import pool_bucket, reconcile_pool
from scheduler.replicasets import reconcile_replicaset, replicaset_bucket
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Bucket, Change, Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
RESYNC_S = 5.0
CLONE_LOOK_S = 1.0  # how soon a clone under way is looked at again (its snapshot and copies are the nodes' work)
RS, POOL, CLONE = "vmirs", "vmpool", "vmclone"
Event = Callable[[str, str, str, str], Awaitable[None]]


class Workloads:
    def __init__(self, store: Store, *, emit: Event, clock: Callable[[], float] = time.time,
                 vmis: Callable[[], Iterable[VMI]] | None = None, vms: Callable[[], Iterable[VM]] | None = None,
                 fed: bool = False) -> None:
        """vmis, vms: the leader's copies of every VMI and VM (scheduler.vmicache), for the resync;
        without them the resync reads the buckets, whose consumer creation stalls writes to them for
        seconds at 10,000, and whose decoding and validating every 5 s was over half the scheduler's
        CPU at 1,000 nodes / 10,000 VMs (py-spy, bench/hollow_nodes.py).
        fed: VMI and VM changes come from the owner's watches (``vmi_changed``, ``vm_changed``), not
        watches of its own: each change delivered to and decoded by the leader once, not twice."""
        self.store = store
        self.fed = fed
        self._cached_vmis = vmis
        self._cached_vms = vms
        self.emit = emit
        self.clock = clock
        self._queue = WorkQueue(self._reconcile, bind=("workload",))
        self._tasks: list[asyncio.Task[None]] = []
        self._sets: Bucket[ReplicaSet] | None = None
        self._pools: Bucket[Pool] | None = None
        self._clones: Bucket[VMClone] | None = None
        self._pool_names: set[str] = set()  # as the pools watch last said: whose a deleted VM was is not said

    async def start(self) -> None:
        self._sets = await replicaset_bucket(self.store)
        self._pools = await pool_bucket(self.store)
        self._clones = await clone_bucket(self.store)
        self._queue = WorkQueue(self._reconcile, bind=("workload",))
        self._tasks = [asyncio.create_task(self._forever(watch)) for watch in
                       (self._watch_sets, self._watch_pools, self._watch_clones, self._resync,
                        *(() if self.fed else (self._watch_vmis, self._watch_vms)))]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._queue.close()

    async def _reconcile(self, key: str) -> None:
        kind, _, name = key.partition("/")
        if kind == RS and self._sets is not None:
            await reconcile_replicaset(self.store, self._sets, name, self.clock(), self.emit)
        elif kind == POOL and self._pools is not None:
            await reconcile_pool(self.store, self._pools, name, self.clock(), self.emit)
        elif kind == CLONE and self._clones is not None:
            if await CloneStep(self.store, self._clones, self.emit, self.clock()).run(name):
                asyncio.get_running_loop().call_later(CLONE_LOOK_S, self._queue.kick, key)

    async def _forever(self, watch: Callable[[], Awaitable[None]]) -> None:
        while True:  # a watch that ends starts again and replays every current value
            try:
                await watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, and the watch starts again
                log.warning("workload watch ended; starting it again", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)

    async def _watch_sets(self) -> None:
        if self._sets is not None:
            async for change in self._sets.watch():
                self._queue.kick(f"{RS}/{change.key}")

    async def _watch_pools(self) -> None:
        if self._pools is not None:
            async for change in self._pools.watch():
                if change.value is None:
                    self._pool_names.discard(change.key)
                else:
                    self._pool_names.add(change.key)
                self._queue.kick(f"{POOL}/{change.key}")

    async def _watch_clones(self) -> None:
        if self._clones is not None:
            async for change in self._clones.watch():
                self._queue.kick(f"{CLONE}/{change.key}")

    async def _watch_vmis(self) -> None:
        async for change in self.store.vmis.watch():
            self.vmi_changed(change)

    def vmi_changed(self, change: Change[VMI]) -> None:
        if change.value is not None and change.value.owner is not None:
            self._queue.kick(f"{RS}/{change.value.owner}")

    async def _watch_vms(self) -> None:
        async for change in self.store.vms.watch():
            self.vm_changed(change)

    def vm_changed(self, change: Change[VM]) -> None:
        if change.value is not None and change.value.owner is not None:
            self._queue.kick(f"{POOL}/{change.value.owner}")
        elif change.value is None:
            for pool in self._pool_names:  # whose it was, the deletion does not say
                self._queue.kick(f"{POOL}/{pool}")

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            await self._kick_all()

    async def _kick_all(self) -> None:
        if self._sets is not None:
            for rs in await self._sets.items():
                self._queue.kick(f"{RS}/{rs.key}")
        if self._pools is not None:
            for pool in await self._pools.items():
                self._queue.kick(f"{POOL}/{pool.key}")
        if self._clones is not None:
            for clone in await self._clones.items():
                self._queue.kick(f"{CLONE}/{clone.key}")
        # members whose set is gone (deleted while no leader watched) are let go
        vmis = (self._cached_vmis() if self._cached_vmis is not None
                else [e.value for e in await self.store.vmis.items()])
        for vmi in vmis:
            if vmi.owner is not None and not vmi.deleting:
                self._queue.kick(f"{RS}/{vmi.owner}")
        vms = (self._cached_vms() if self._cached_vms is not None
               else [e.value for e in await self.store.vms.items()])
        for vm in vms:
            if vm.owner is not None:
                self._queue.kick(f"{POOL}/{vm.owner}")
