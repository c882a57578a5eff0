"""Online expansion of a running guest's volumes (KubeVirt's ExpandDisks): a volume resized while a
VM runs (``virtbus volume resize``, a PVC's resize) grows under the guest, which sees its disk's new
size at once; without it the guest would see it only at its next start (launcher.disks.grow_volume).

The volume's record says the size wanted; the domain says each disk's size now (its capacity, read
back by the disk's alias, never remembered); libvirt's block resize has QEMU grow the file it holds
open. A volume only grows, as a PVC does. No subprocess runs here (launcher.reaper).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt
import structlog

from launcher.hotplugplan import live_disks
from launcher.keeperloop import first_line, keep
from launcher.volumerecords import VolumeRecords, wake_on_changes
from proto.nodeapi import EventNote
from proto.quantity import format_bytes, parse_bytes
from proto.snapshots import written_volumes
from proto.spec import PersistentVolumeClaim, VMSpec
from proto.state import PersistentVolume

log = structlog.get_logger()
RETRY_S = 2.0
SECTOR = 512  # QEMU grows a disk by whole sectors
EVENT_REASON = "VolumeExpanded"


@dataclass(frozen=True)
class LiveDisk:
    target: str  # vda, sda
    capacity: int  # bytes, as the guest sees it


@dataclass(frozen=True)
class Growth:
    volume: str  # the spec's volume name
    claim: str
    target: str
    size: int  # bytes, whole sectors


def plan(spec: VMSpec, live: Mapping[str, LiveDisk], records: Mapping[str, PersistentVolume]) -> list[Growth]:
    """Pure: the disks to grow: each volume the guest writes whose record asks more than its disk has.
    live: the domain's disks by volume name (a disk not attached yet is grown once it is); records: the
    volumes' records by name (a volume without one, deleted meanwhile, is passed over)."""
    written = set(written_volumes(spec))
    out = []
    for volume in spec.volumes:
        if not isinstance(volume.source, PersistentVolumeClaim) or volume.source.claim_name not in written:
            continue
        disk, record = live.get(volume.name), records.get(volume.source.claim_name)
        if disk is None or record is None:
            continue
        wanted = -(-parse_bytes(record.size) // SECTOR) * SECTOR
        if wanted > disk.capacity:
            out.append(Growth(volume=volume.name, claim=volume.source.claim_name, target=disk.target, size=wanted))
    return out


class SizeControl(Protocol):
    """What growing needs of the domain (LibvirtSizes; a stateful fake in the unit tests)."""

    async def disks(self, dom: Any) -> dict[str, LiveDisk]: ...  # by volume name

    async def grow(self, dom: Any, target: str, size: int) -> None: ...


class LibvirtSizes:
    async def disks(self, dom: Any) -> dict[str, LiveDisk]:
        def read() -> dict[str, LiveDisk]:
            targets = live_disks(dom.XMLDesc(0)).targets
            return {name: LiveDisk(target, int(dom.blockInfo(target)[0])) for name, target in targets.items()}
        return await asyncio.to_thread(read)

    async def grow(self, dom: Any, target: str, size: int) -> None:
        await asyncio.to_thread(dom.blockResize, target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


Note = Callable[[EventNote], Awaitable[None]]


class VolumeGrower:
    def __init__(self, control: SizeControl, records: VolumeRecords, domain: Callable[[], Any], note: Note, *,
                 retry: float = RETRY_S) -> None:
        """domain: the domain on libvirtd's current connection (None until it runs)."""
        self.control = control
        self.records = records
        self.domain = domain
        self.note = note
        self.retry = retry
        self.spec: VMSpec | None = None
        self.wake = asyncio.Event()
        self.has_claims = asyncio.Event()
        self.standing_down = False

    def want(self, spec: VMSpec) -> None:
        self.spec = spec
        if self.claims():
            self.has_claims.set()
        self.wake.set()

    def claims(self) -> set[str]:
        """The volumes whose records it follows: the ones its guest writes."""
        return set(written_volumes(self.spec)) if self.spec is not None else set()

    def poke(self) -> None:
        """A volume's record changed, a disk was attached, or libvirtd restarted."""
        self.wake.set()

    def stand_down(self) -> None:
        self.standing_down = True

    async def run(self) -> None:
        follow = wake_on_changes(self.records, self.claims, self.wake, once=self.has_claims)
        await keep(self.wake, self.sync, what="volume growth", retry=self.retry, beside=follow)

    async def sync(self) -> bool:
        """One look: grow what its record asks more of. True when nothing is left to do."""
        dom, spec = self.domain(), self.spec
        if dom is None or spec is None or self.standing_down or not self.claims():
            return True
        await self.records.synced()
        records = {name: r for name in self.claims() if (r := self.records.get(name)) is not None}
        steps = plan(spec, await self.control.disks(dom), records)
        for step in steps:
            try:
                await self.control.grow(dom, step.target, step.size)
            except Exception as exc:  # libvirt's: a backup or migration job holds the disk; tried again
                log.warning("volume not grown yet", volume=step.claim, target=step.target, error=first_line(exc))
                return False
            message = f"Volume {step.claim} expanded to {format_bytes(step.size)} ({step.target})"
            log.info("volume expanded", volume=step.claim, target=step.target, size=step.size)
            await self.note(EventNote(reason=EVENT_REASON, message=message))
        return not plan(spec, await self.control.disks(dom), records)
