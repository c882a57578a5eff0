"""The node's work on its volumes: populating each volume placed here (blank, from an image, from a
snapshot) as soon as it has this node, and snapshotting those no instance here uses, reporting
progress through the node API (proto.snapshots). Snapshots of volumes a running guest uses are its
launcher's (launcher/backup.py), taken consistently while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from handler import nodevmis
from proto.errors import ApiError, Code
from proto.nodeapi import tidy
from proto.snapshots import (
    TAKER_HANDLER,
    SnapshotPhase,
    SnapshotProgress,
    VolumeProgress,
    VolumeSnapshot,
    orphaned,
    snapshot_taker,
    written_volumes,
)
from proto.state import VMI, PersistentVolume, VolumePhase
from servicekit import volumedata
from servicekit.cancelling import raise_if_cancelling
from servicekit.informer import Informer, shared
from servicekit.nodeclient import NodeApiClient
from servicekit.paths import path_under, volume_path
from servicekit.store import Store

log = structlog.get_logger()
LOOK_EVERY_S = 2.0


@dataclass(frozen=True)
class Work:
    kind: str  # "populate" | "snapshot"
    name: str


def plan(node: str, volumes: list[PersistentVolume], snapshots: list[VolumeSnapshot], vmis: list[VMI],
         busy: set[Work]) -> list[Work]:
    """Pure: what this node's handler starts now. A volume here not Ready yet is populated (again,
    after a handler restart: its file, if whole, is kept). A snapshot of a volume here is the
    handler's when no instance here uses the volume; one it had claimed before a restart it takes again,
    and so one whose launcher ended before it was done (the volume is at rest now)."""
    out = [Work("populate", v.name) for v in volumes
           if v.node == node and v.phase in (VolumePhase.PENDING, VolumePhase.POPULATING)]
    uses = {v.name: set(written_volumes(v.spec)) for v in vmis}
    for snap in snapshots:
        if snap.node != node:
            continue
        if snap.phase is SnapshotPhase.PENDING and snapshot_taker(snap, vmis, uses) == TAKER_HANDLER:
            out.append(Work("snapshot", snap.name))
        elif snap.phase is SnapshotPhase.IN_PROGRESS and (snap.taken_by == TAKER_HANDLER or orphaned(snap, vmis)):
            out.append(Work("snapshot", snap.name))  # its own from before a restart, or a launcher's that ended
    return [w for w in out if w not in busy]


class VolumeWork:
    def __init__(self, store: Store, nodeapi: NodeApiClient, node: str, volumes_dir: Path) -> None:
        self.store = store
        self.nodeapi = nodeapi
        self.node = node
        self.dir = volumes_dir
        self.busy: set[Work] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.volumes = shared(store, store.volumes)
        self.snapshots = shared(store, store.snapshots)

    async def run(self) -> None:
        # VMIs change often and matter only to who takes a pending snapshot: the periodic look (from the
        # caches, so no read on the server) covers them
        watches = [asyncio.create_task(self._kick_on(i)) for i in (self.volumes, self.snapshots)]
        try:
            while True:
                # Python 3.11's wait_for (under nats-py's requests) can swallow a cancel that comes as
                # its reply does: a cancel asked is honoured here, so the handler's stop never hangs.
                raise_if_cancelling()
                self._wake.clear()
                try:
                    await self.step()
                except Exception as exc:  # noqa: BLE001 - the next look tries again
                    log.warning("volume work: look failed", error=str(exc) or type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LOOK_EVERY_S):
                        await self._wake.wait()
        finally:
            for task in [*watches, *self._tasks]:
                task.cancel()

    async def _kick_on(self, informer: Informer[Any]) -> None:
        async for _ in informer.changes():  # the informer watches again by itself if its watch ends
            self._wake.set()

    async def step(self) -> list[Work]:
        volumes = [e.value for e in await self.volumes.items()]
        snapshots = [e.value for e in await self.snapshots.items()]
        # Only this node's instances count (snapshot_taker and orphaned look at the snapshot's node, and
        # only snapshots here are ours): the node's VMI copies, never every VMI of the cluster. A copy may
        # trail its VMI, but a launcher starts only once its copy is in this cache, and a trailing end
        # only makes us wait.
        vmis = await nodevmis.vmis_here(self.store, self.node)
        todo = plan(self.node, volumes, snapshots, vmis, self.busy)
        for work in todo:
            self.busy.add(work)
            task = asyncio.create_task(self._do(work))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return todo

    async def _do(self, work: Work) -> None:
        try:
            if work.kind == "populate":
                await self.populate(work.name)
            else:
                await self.snapshot(work.name)
        except Exception as exc:  # noqa: BLE001 - said on the record; looked at again later
            log.warning("volume work failed", work=work.kind, name=work.name, error=str(exc) or type(exc).__name__)
        finally:
            self.busy.discard(work)

    # --- population --------------------------------------------------------------------------------
    async def populate(self, name: str) -> None:
        entry = await self.store.volumes.get(name)
        if entry is None or entry.value.node != self.node:
            return
        volume = entry.value

        async def say(phase: VolumePhase, done: int = 0, total: int = 0, reason: str = "") -> None:
            await self.nodeapi.volume_progress(VolumeProgress(volume=name, uid=volume.uid, phase=phase, done=done,
                                                              total=total, reason=tidy(reason)))

        path = volume_path(self.dir, volume)
        snap = None
        if volume.snapshot is not None:
            found = await self.store.snapshots.get(volume.snapshot)
            snap = found.value if found is not None else None
        try:
            if not path.exists():
                await say(VolumePhase.POPULATING)
            made = await volumedata.populate(
                volume, path, images=self.store.images, snapshot_objects=self.store.snapshot_objects,
                snapshot=snap, report=lambda done, total: say(VolumePhase.POPULATING, done, total))
            size = path.stat().st_size
            await say(VolumePhase.READY, size, size)
            log.info("volume ready", volume=name, populated=made, source=volume.snapshot or volume.image or "blank")
        except ApiError as exc:
            if exc.code is Code.NOT_FOUND and exc.message.startswith(f"volume {name}"):
                return  # deleted or replaced meanwhile
            await say(VolumePhase.FAILED, reason=exc.message)
        except Exception as exc:
            await say(VolumePhase.FAILED, reason=str(exc) or type(exc).__name__)
            raise

    # --- snapshots of volumes at rest ----------------------------------------------------------------
    async def snapshot(self, name: str) -> None:
        entry = await self.store.snapshots.get(name)
        if entry is None:
            return
        snap = entry.value

        async def say(phase: SnapshotPhase, done: int = 0, total: int = 0, *, size: int = 0, digest: str = "",
                      reason: str = "") -> None:
            await self.nodeapi.snapshot_progress(SnapshotProgress(
                snapshot=name, uid=snap.uid, taker=TAKER_HANDLER, phase=phase, done=done, total=total, size=size,
                digest=digest, reason=tidy(reason)))

        try:
            await say(SnapshotPhase.IN_PROGRESS)  # the claim: refused if a launcher has it
        except ApiError as exc:
            log.info("snapshot not ours", snapshot=name, why=exc.message)
            return
        tmp = path_under(self.dir, f"snap-{snap.uid}", ".tmp")
        try:
            volume = await self.store.volumes.get(snap.volume)
            if volume is None or volume.value.uid != snap.volume_uid:
                raise ApiError(Code.NOT_FOUND, f"volume {snap.volume} is gone or was replaced")
            path = volume_path(self.dir, volume.value)
            if not path.exists():
                raise ApiError(Code.NOT_FOUND, f"volume {snap.volume} has no file on {self.node}")
            await volumedata.copy_at_rest(path, tmp)
            size, digest = await volumedata.upload(self.store.snapshot_objects, snap.uid, tmp,
                                                   lambda d, t: say(SnapshotPhase.IN_PROGRESS, d, t))
            await say(SnapshotPhase.READY, size, size, size=size, digest=digest)
            log.info("snapshot ready", snapshot=name, volume=snap.volume, size=size)
        except Exception as exc:
            await say(SnapshotPhase.FAILED, reason=(exc.message if isinstance(exc, ApiError) else str(exc))
                      or type(exc).__name__)
            raise
        finally:
            tmp.unlink(missing_ok=True)
