"""Snapshots of a running guest's volumes: one libvirt push-mode backup job for all of them, so they
are one point in time while the guest runs (KubeVirt's online VirtualMachineSnapshot, without
freezing the guest's file systems: crash-consistent). Each finished copy is put in the snapshot
object store and reported through the node API (proto.snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import quoteattr

import libvirt
import structlog

from proto.errors import ApiError
from proto.nodeapi import tidy
from proto.snapshots import SnapshotPhase, SnapshotProgress, VolumeSnapshot
from proto.state import PersistentVolume
from servicekit import volumedata
from servicekit.nodeclient import NodeApiClient
from servicekit.paths import path_under, volume_path
from servicekit.store import Store

log = structlog.get_logger()
LOOK_EVERY_S = 1.0
POLL_S = 0.5


def compose_backup_xml(domain_xml: str, targets: dict[str, str]) -> tuple[str, list[str]]:
    """Pure: a push-mode <domainbackup> copying each disk whose source file is a key of targets into
    its value (qcow2), every other disk left out; and the disks' target names, in order.
    Raises ValueError when a wanted source is not a disk of the domain."""
    root = ET.fromstring(domain_xml)
    disks, found = [], []
    for disk in root.iterfind("./devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if target is None:
            continue
        dev = target.get("dev", "")
        path = source.get("file") if source is not None else None
        if path in targets and disk.get("device", "disk") == "disk":
            found.append(path)
            disks.append(f"<disk name={quoteattr(dev)} backup='yes' type='file'><driver type='qcow2'/>"
                         f"<target file={quoteattr(targets[path])}/></disk>")
        else:
            disks.append(f"<disk name={quoteattr(dev)} backup='no'/>")
    missing = sorted(set(targets) - set(found))
    if missing:
        raise ValueError(f"not disks of the domain: {', '.join(missing)}")
    return f"<domainbackup mode='push'><disks>{''.join(disks)}</disks></domainbackup>", found


def disk_files(domain_xml: str) -> set[str]:
    """Pure: the files of the domain's disks (not its cdroms)."""
    out = set()
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        source = disk.find("source")
        if disk.get("device", "disk") == "disk" and source is not None and source.get("file"):
            out.add(source.get("file", ""))
    return out


def attached_only(todo: list[VolumeSnapshot], files: dict[str, str | None], disks: set[str]) -> list[VolumeSnapshot]:
    """Pure: of the snapshots to take now, those whose volume's file is a disk of the domain. A volume
    hotplugged but not attached yet waits (the guest has not written it yet, and the domain cannot copy
    it), and so do its VM snapshot's other parts here, to be one point in time with it once it is there.
    files: snapshot name -> its volume's file, None when the volume is gone (taken, to fail with why)."""
    waiting = {s.name for s in todo if files.get(s.name) is not None and files[s.name] not in disks}
    held = {s.group for s in todo if s.name in waiting and s.group is not None}
    return [s for s in todo if s.name not in waiting and (s.group is None or s.group not in held)]


def whole_groups(todo: list[VolumeSnapshot], groups: dict[str, set[str]]) -> list[VolumeSnapshot]:
    """Pure: the snapshots to take now: those of no VM snapshot, and those of a VM snapshot whose
    parts here (groups: VM snapshot -> its parts of this launcher's volumes) are all there; the
    others wait for the rest to be recorded."""
    names = {s.name for s in todo}
    return [s for s in todo if s.group is None or s.group not in groups or groups[s.group] <= names]


class BackupControl(Protocol):
    """What a backup needs of libvirt (the real one: LibvirtBackup)."""

    async def xml(self, dom: Any) -> str: ...

    async def begin(self, dom: Any, backup_xml: str) -> None: ...

    async def progress(self, dom: Any) -> tuple[bool, int, int]: ...  # (still running, done, total)

    async def succeeded(self, dom: Any) -> bool: ...


class LibvirtBackup:
    async def xml(self, dom: Any) -> str:
        return str(await asyncio.to_thread(dom.XMLDesc, 0))

    async def begin(self, dom: Any, backup_xml: str) -> None:
        await asyncio.to_thread(dom.backupBegin, backup_xml, None, 0)

    async def progress(self, dom: Any) -> tuple[bool, int, int]:
        info = await asyncio.to_thread(dom.jobInfo)
        return info[0] != libvirt.VIR_DOMAIN_JOB_NONE, int(info[4]), int(info[3])

    async def succeeded(self, dom: Any) -> bool:
        try:
            stats = await asyncio.to_thread(dom.jobStats, libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return True  # nothing kept of the job: it did not fail (a failure is kept)
        return bool(int(stats.get("type", libvirt.VIR_DOMAIN_JOB_COMPLETED)) != libvirt.VIR_DOMAIN_JOB_FAILED)


class SnapshotTaker:
    """In a running launcher: the snapshots asked of its volumes, taken together."""

    def __init__(self, store: Store, nodeapi: NodeApiClient, *, vmi: str, node: str, volumes: list[str],
                 volumes_dir: Path, workdir: Path, domain: Callable[[], Any],
                 control: BackupControl | None = None) -> None:
        self.store = store
        self.nodeapi = nodeapi
        self.vmi = vmi
        self.node = node
        self.volumes = set(volumes)
        self.dir = volumes_dir
        self.workdir = workdir
        self.domain = domain
        self.control = control or LibvirtBackup()
        self.taker = f"vmi/{vmi}"
        self.has_volumes = asyncio.Event()
        self.poked = asyncio.Event()
        self.looking = asyncio.Lock()  # one look at a time: a snapshot is claimed once
        self.follow(volumes)

    def follow(self, volumes: list[str]) -> None:
        """The volumes its guest writes now (a hotplugged one comes and goes while it runs)."""
        self.volumes = set(volumes)
        if self.volumes:
            self.has_volumes.set()

    def poke(self) -> None:
        """A disk was attached: a snapshot that waited for it is taken now."""
        self.poked.set()

    def wanted(self, snapshots: list[VolumeSnapshot]) -> list[VolumeSnapshot]:
        """Pure: the pending snapshots of this launcher's volumes (a VM snapshot's all come at once)."""
        return [s for s in snapshots if s.node == self.node and s.volume in self.volumes
                and (s.phase is SnapshotPhase.PENDING
                     or (s.phase is SnapshotPhase.IN_PROGRESS and s.taken_by == self.taker))]

    async def run(self) -> None:
        await self.has_volumes.wait()  # no watch of the snapshots for a guest that writes no volume
        poked = asyncio.create_task(self._on_poke())
        me = asyncio.current_task()
        try:
            while me is None or not me.cancelling():  # a cancel nats-py's requests swallowed is honoured
                try:
                    async for change in self.store.snapshots.watch():
                        if change.value is not None and self.wanted([change.value]):
                            await self.look()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the records say it; the watch starts again
                    log.warning("snapshot failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(LOOK_EVERY_S)
        finally:
            poked.cancel()

    async def _on_poke(self) -> None:
        while True:
            await self.poked.wait()
            self.poked.clear()
            try:
                await self.look()
            except Exception as exc:  # noqa: BLE001 - the records say it
                log.warning("snapshot failed", error=str(exc) or type(exc).__name__)

    async def look(self) -> None:
        """Take what is wanted now; a VM snapshot's parts only once all of them (of this VM's
        volumes) are recorded and their disks attached, so they go in one job."""
        async with self.looking:
            await self._look()

    async def _look(self) -> None:
        todo = self.wanted([e.value for e in await self.store.snapshots.items()])
        if not todo:
            return
        groups: dict[str, set[str]] = {}
        for group in {s.group for s in todo if s.group is not None}:
            record = await self.store.vm_snapshots.get(group)
            if record is not None:
                groups[group] = {part for volume, part in record.value.volumes.items() if volume in self.volumes}
        todo = whole_groups(todo, groups)
        records: dict[str, PersistentVolume | None] = {}  # by snapshot: its volume, None if gone or replaced
        for snap in todo:
            volume = await self.store.volumes.get(snap.volume)
            records[snap.name] = volume.value if volume is not None and volume.value.uid == snap.volume_uid else None
        files = {name: str(volume_path(self.dir, v)) if v is not None else None for name, v in records.items()}
        todo = attached_only(todo, files, disk_files(await self.control.xml(self.domain()))) if todo else []
        if todo:
            await self.take(todo, records)

    async def _say(self, snap: VolumeSnapshot, phase: SnapshotPhase, done: int = 0, total: int = 0, *,
                   size: int = 0, digest: str = "", reason: str = "") -> None:
        await self.nodeapi.snapshot_progress(SnapshotProgress(
            snapshot=snap.name, uid=snap.uid, taker=self.taker, phase=phase, done=done, total=total, size=size,
            digest=digest, reason=tidy(reason), online=True))

    async def take(self, todo: list[VolumeSnapshot], records: dict[str, PersistentVolume | None]) -> None:
        """records: each snapshot's volume as the look read it, None if gone or replaced."""
        claimed: list[tuple[VolumeSnapshot, PersistentVolume]] = []
        for snap in todo:
            try:
                await self._say(snap, SnapshotPhase.IN_PROGRESS)
            except ApiError as exc:
                log.info("snapshot not ours", snapshot=snap.name, why=exc.message)
                continue
            volume = records.get(snap.name)
            if volume is None:
                await self._say(snap, SnapshotPhase.FAILED, reason=f"volume {snap.volume} is gone or was replaced")
                continue
            claimed.append((snap, volume))
        if not claimed:
            return
        targets = {str(volume_path(self.dir, v)): str(path_under(self.workdir, f"backup-{s.uid}", ".qcow2"))
                   for s, v in claimed}
        try:
            dom = self.domain()
            backup_xml, _ = compose_backup_xml(await self.control.xml(dom), targets)
            await self.control.begin(dom, backup_xml)
            log.info("backup begun", snapshots=[s.name for s, _ in claimed])
            while True:
                running, done, total = await self.control.progress(dom)
                if not running:
                    break
                for snap, _ in claimed:  # one job: the same share for each
                    with contextlib.suppress(ApiError):
                        await self._say(snap, SnapshotPhase.IN_PROGRESS, min(done, total), total)
                await asyncio.sleep(POLL_S)
            if not await self.control.succeeded(dom):
                raise RuntimeError("libvirt's backup job failed")
            for snap, record in claimed:
                await self._upload(snap, Path(targets[str(volume_path(self.dir, record))]))
        except Exception as exc:
            for snap, _ in claimed:
                with contextlib.suppress(ApiError):
                    await self._say(snap, SnapshotPhase.FAILED, reason=str(exc) or type(exc).__name__)
            raise
        finally:
            for target in targets.values():
                Path(target).unlink(missing_ok=True)

    async def _upload(self, snap: VolumeSnapshot, copy: Path) -> None:
        """The backup's qcow2 as it is: QEMU wrote zeroes as zero clusters, so it is compact enough.
        No qemu-img here: once the guest runs, the launcher reaps every child of its (libvirtd's and
        QEMU's orphans) and would take a subprocess's exit status from under asyncio."""
        size, digest = await volumedata.upload(self.store.snapshot_objects, snap.uid, copy,
                                               lambda d, t: self._say(snap, SnapshotPhase.IN_PROGRESS, d, t))
        await self._say(snap, SnapshotPhase.READY, size, size, size=size, digest=digest)
        log.info("snapshot ready", snapshot=snap.name, volume=snap.volume, size=size)
