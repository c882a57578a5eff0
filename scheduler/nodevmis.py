"""The leader keeps each node's copy of its VMIs (proto.nodevmis, key <node>.<vmi> in the node's shard,
subjects.node_vmis_bucket) so a handler watches its own node's keys, not every VMI of the cluster:
NATS filters by subject only, so the node has to be in the key.

A bound VMI is copied to its node's key whenever it changes; the copy goes when the VMI goes, is
unbound or moves. On each term the leader first rebuilds the whole bucket from ``vmis`` (which is
also the migration for state written before the buckets existed, and for copies filed in another
shard, as another count of shards would leave them: deleted there, written where their node
watches), then follows the watch. The unsharded bucket of older releases is deleted once the shards
are rebuilt and no handler of an older release watches it any more (it has no consumers): until then
such a handler keeps what it had.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats.js.errors
import structlog

from proto import migrations, subjects
from proto.nodevmis import NodeVmi
from proto.state import VMI
from servicekit.store import Bucket, Change, Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
RETRY_S = 1.0


@dataclass(frozen=True)
class Copied:
    keys: tuple[str, ...]  # <node>.<vmi>: its node's, and while it migrates its target's too
    revision: int  # the vmis revision they copy


@dataclass(frozen=True)
class CopyPlan:
    put: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


def wanted(vmi: VMI | None) -> tuple[str, ...]:
    """The keys a VMI is copied to (pure): its node's; while it migrates, its target node's as well,
    whose handler starts the launcher it moves to (proto.migrations)."""
    if vmi is None or not vmi.node_name:
        return ()
    target = migrations.target_of(vmi)
    if target is None or target == vmi.node_name:
        return (subjects.node_vmi(vmi.node_name, vmi.name),)
    return subjects.node_vmi(vmi.node_name, vmi.name), subjects.node_vmi(target, vmi.name)


def plan(current: Copied | None, vmi: VMI | None, revision: int) -> CopyPlan:
    """What one VMI's change (value None: deleted) does to the copies (pure)."""
    if current is not None and revision <= current.revision:
        return CopyPlan()  # an older or the same update: the copies are already as new
    want = wanted(vmi)
    stale = tuple(k for k in current.keys if k not in want) if current is not None else ()
    return CopyPlan(put=want, delete=stale)


def strays(copies: dict[str, int], wanted: set[str]) -> list[str]:
    """Copies in the bucket that no bound VMI wants (pure): a rebuild deletes them."""
    return sorted(set(copies) - wanted)


class NodeVmiMirror:
    """Runs while this process leads; ``run`` is cancelled when the term ends. Writes go one serial
    worker per VMI, VMIs in parallel (servicekit.workqueue), each writing the newest change it has:
    a burst of binds is copied with many puts in flight, never two of one VMI out of order."""

    def __init__(self, store: Store, *, fed: bool = False) -> None:
        """fed: the VMI changes come from the owner's watch (``changed``), not a watch of its own: one
        consumer and one decoding of each change fewer in the leader."""
        self.store = store
        self.fed = fed
        self._early: list[Change[VMI]] | None = [] if fed else None  # fed while the copies are rebuilt
        self.copied: dict[str, Copied] = {}  # by VMI name
        self.latest: dict[str, Change[VMI]] = {}  # by VMI name: the newest change not yet copied
        self.queue = WorkQueue(self._copy, bind=("vmi",))

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._rebuild()
                    if self.fed:
                        early, self._early = self._early or [], None
                        for change in early:
                            self.apply(change)
                        await asyncio.Event().wait()  # the owner's watch brings the rest
                    async for change in self.store.vmis.watch():
                        self.apply(change)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged; the rebuild starts over
                    log.warning("node VMI copies interrupted; rebuilding", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RETRY_S)
        finally:
            await self.queue.close()

    async def _rebuild(self) -> None:
        existing: dict[str, int] = {}
        misfiled = 0
        for shard in self.store.node_vmi_shards.values():
            for e in await shard.items():
                if self._copies(e.key) is shard:
                    existing[e.key] = e.value.revision
                else:  # left by a release that split the copies otherwise: its node does not watch it here
                    await shard.delete(e.key)
                    misfiled += 1
        self.copied = {}
        for key, revision in existing.items():
            _, name = subjects.node_vmi_parts(key)
            had = self.copied.get(name)  # a migrating VMI's two copies: as new as the older one
            self.copied[name] = Copied((*had.keys, key), min(had.revision, revision)) if had \
                else Copied((key,), revision)
        kept: set[str] = set()
        for entry in await self.store.vmis.items():
            keys = wanted(entry.value)
            had = self.copied.get(entry.key)
            if had is not None and not set(keys) <= set(had.keys):  # a copy missing: written again
                self.copied[entry.key] = Copied(had.keys, 0)
            self.apply(Change(entry.key, entry.value, entry.revision))
            kept.update(keys)
        gone = strays(existing, kept)
        for key in gone:
            await self._delete(key)
            _, name = subjects.node_vmi_parts(key)
            if (c := self.copied.get(name)) is not None and key in c.keys:
                left = tuple(k for k in c.keys if k != key)
                if left:
                    self.copied[name] = Copied(left, c.revision)
                else:
                    del self.copied[name]
        log.info("node VMI copies rebuilt", copies=len(kept), removed=len(gone), misfiled=misfiled)
        await self._retire_unsharded()

    async def _retire_unsharded(self) -> None:
        stream = subjects.kv_stream(subjects.BUCKET_NODE_VMIS_UNSHARDED)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await self.store.js.stream_info(stream)
            if info.state.consumer_count:
                log.info("unsharded node VMI copies kept: still watched", consumers=info.state.consumer_count)
                return
            await self.store.js.delete_stream(stream)
            log.info("unsharded node VMI copies deleted", stream=stream)

    def changed(self, change: Change[VMI]) -> None:
        """A change from the owner's watch (``fed``): held until the copies are rebuilt, then applied."""
        if self._early is not None:
            self._early.append(change)
        else:
            self.apply(change)

    def apply(self, change: Change[VMI]) -> None:
        """Note a VMI's change; its worker copies the newest one it finds."""
        known = self.latest.get(change.key)
        if known is not None and known.revision >= change.revision:
            return
        self.latest[change.key] = change
        if change.value is not None and not self.queue.busy(change.key) \
                and plan(self.copied.get(change.key), change.value, change.revision) == CopyPlan():
            return  # nothing to copy and no worker that might be copying it now (a burst's creates: unbound)
        self.queue.kick(change.key)

    async def _copy(self, name: str) -> None:
        change = self.latest.get(name)
        if change is None:
            return
        step = plan(self.copied.get(name), change.value, change.revision)
        for key in step.delete:
            await self._delete(key)
        if step.delete:
            self.copied.pop(name, None)
        if step.put and change.value is not None:
            copy = NodeVmi(vmi=change.value, revision=change.revision)
            for key in step.put:
                await self._copies(key).put(key, copy)
            self.copied[name] = Copied(step.put, change.revision)
        if change.value is None and self.latest.get(name) is change:
            del self.latest[name]  # gone and its copy with it: nothing to remember

    async def _delete(self, key: str) -> None:
        await self._copies(key).delete(key)

    def _copies(self, key: str) -> Bucket[NodeVmi]:
        """The shard a copy's key belongs in: its node's, as the handler watches it."""
        node, _ = subjects.node_vmi_parts(key)
        return self.store.node_vmis(node)
