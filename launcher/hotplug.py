"""Carrying out the VMI's hotplugged volumes on the running domain: the thin shell around
launcher.hotplugplan. It looks again whenever the VMI or a hotplugged volume's record changes (heard
from the process's informer, launcher.volumerecords), and every second while a volume's file is not
there yet or a step failed (libvirtd away for a moment, the guest slow to let a disk go), and says
every volume's target and each hotplugged one's phase in the VMI's status.volumeStatus.

A volume's file is its node's (the handler populates it once the volume is placed here); the
launcher attaches it only once its record is Ready on this node and its file is there. No
subprocess runs here: once the guest runs, the launcher reaps every child (launcher.reaper), and
would take a subprocess's exit status from under asyncio. So a volume grown since it was made is
attached at its file's size, and then grown under the guest by QEMU (launcher.volumegrowth).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import libvirt
import structlog

from launcher.domain import DISK_ALIAS_PREFIX, DiskPlan, disk_xml
from launcher.hotplugplan import (
    READY_REASON,
    LiveDisks,
    Outcome,
    free_target,
    free_unit,
    live_disks,
    plan,
    statuses,
)
from launcher.keeperloop import first_line, keep
from launcher.volumerecords import VolumeRecords, wake_on_changes
from proto.hotplug import hotplugged
from proto.nodeapi import EventNote
from proto.spec import VMSpec
from proto.state import HotplugPhase, VolumePhase, VolumeStatus
from servicekit.paths import volume_path

log = structlog.get_logger()
RETRY_S = 1.0
# A detach is asked again only once this long has passed without the disk going (libvirt itself waits
# 5 s for QEMU's word): a second ask while the first is under way can leave QEMU holding the disk's file.
DETACH_AGAIN_S = 10.0


class DiskControl(Protocol):
    """What hotplug needs of the domain (LibvirtDisks; a stateful fake in the unit tests)."""

    async def disks(self, dom: Any) -> LiveDisks: ...  # as the domain has them

    async def attach(self, dom: Any, xml: str) -> None: ...

    async def detach(self, dom: Any, name: str) -> None: ...


class LibvirtDisks:
    """The real DiskControl: the live domain, changed live only (the domain is defined anew at each start)."""

    async def disks(self, dom: Any) -> LiveDisks:
        return live_disks(await asyncio.to_thread(dom.XMLDesc, 0))

    async def attach(self, dom: Any, xml: str) -> None:
        await asyncio.to_thread(dom.attachDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    async def detach(self, dom: Any, name: str) -> None:
        # virtio-scsi unplugs at once; libvirt waits for QEMU's word (a few seconds at most) and the
        # disk read back says whether it went
        await asyncio.to_thread(dom.detachDeviceAlias, DISK_ALIAS_PREFIX + name, libvirt.VIR_DOMAIN_AFFECT_LIVE)


Report = Callable[[list[VolumeStatus]], Awaitable[bool]]
Note = Callable[[EventNote], Awaitable[None]]


def changes(before: list[VolumeStatus] | None, after: list[VolumeStatus], attached: set[str]) -> list[EventNote]:
    """Pure: the events of a change in what the launcher says (KubeVirt's virt-handler's): a hotplugged
    volume became Ready, or its disk is gone. Of what the first look finds, only what it attached itself
    (not a boot's disks). attached: what this look attached."""
    ready_before = {s.name for s in before or [] if s.hotplug and s.phase is HotplugPhase.READY}
    out = [EventNote(reason=READY_REASON, message=s.message) for s in after
           if s.hotplug and s.phase is HotplugPhase.READY and s.name not in ready_before
           and (before is not None or s.name in attached)]
    now = {s.name for s in after if s.hotplug}
    out += [EventNote(reason="VolumeUnplugged", message=f"Volume {s.name} was removed from the VM")
            for s in before or [] if s.hotplug and s.name not in now]
    return out


class HotplugKeeper:
    def __init__(self, control: DiskControl, volumes: VolumeRecords, domain: Callable[[], Any], report: Report,
                 note: Note, *, node: str, volumes_dir: Path, retry: float = RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """domain: the domain on libvirtd's current connection (None until it runs); report: says the
        volumes' status, True once said."""
        self.control = control
        self.volumes = volumes
        self.domain = domain
        self.report = report
        self.note = note
        self.node = node
        self.volumes_dir = volumes_dir
        self.retry = retry
        self.spec: VMSpec | None = None
        self.said: list[VolumeStatus] | None = None  # what the control plane has
        self.seen: list[VolumeStatus] | None = None  # what the last look found
        self.wake = asyncio.Event()
        self.hotplugging = asyncio.Event()
        self.clock = clock
        self.detaching: dict[str, float] = {}  # disks whose detach was asked (when), until they are gone
        self.standing_down = False

    def want(self, spec: VMSpec) -> None:
        """The instance's spec as last heard."""
        self.spec = spec
        if hotplugged(spec):
            self.hotplugging.set()
        self.wake.set()

    def booted(self, spec: VMSpec, targets: Mapping[str, str]) -> list[VolumeStatus]:
        """The volumes' status as the boot made them (volume name -> target), for the Running report to
        say: the first look then has nothing new to say."""
        said = statuses(spec, targets, Outcome(waiting={}, failed={}))
        self.said = self.seen = said
        return said

    def stand_down(self) -> None:
        """The instance is stopping: its disks go with the domain."""
        self.standing_down = True

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        follow = wake_on_changes(self.volumes, self._claims, self.wake, once=self.hotplugging)
        await keep(self.wake, self.sync, what="hotplug step", retry=self.retry, beside=follow)

    def _claims(self) -> set[str]:
        return set(hotplugged(self.spec).values()) if self.spec is not None else set()

    async def sync(self) -> bool:
        """One look: detach what the spec dropped, attach what it added and is ready; say the status.
        True when nothing is left to do."""
        dom, spec = self.domain(), self.spec
        if dom is None or spec is None or self.standing_down:
            return True
        found = await self.control.disks(dom)
        live, units = dict(found.targets), set(found.units)
        steps = plan(spec, live)
        waiting: dict[str, str] = {}
        failed: dict[str, str] = {}
        now = self.clock()
        self.detaching = {n: t for n, t in self.detaching.items() if n in steps.detach}
        for name in steps.detach:
            if now - self.detaching.get(name, -DETACH_AGAIN_S) < DETACH_AGAIN_S:
                continue  # asked already, and going: asked again, libvirt could leave QEMU holding its file
            self.detaching[name] = now
            try:
                await self.control.detach(dom, name)
            except Exception as exc:  # libvirt's: the guest has not let it go yet, or it is going already
                failed[name] = f"detach: {first_line(exc)}"
        claims = hotplugged(spec)
        for name in steps.attach:
            why, path = await self._ready_file(claims[name])
            if path is None:
                waiting[name] = why
                continue
            disk = next(d for d in spec.disks if d.name == name)
            target, unit = free_target(live.values()), free_unit(units)
            try:
                await self.control.attach(dom, disk_xml(DiskPlan(
                    name=name, path=str(path), format="qcow2", bus=disk.bus, target=target, readonly=False,
                    boot_order=None, serial=disk.serial, cache=disk.cache, io=disk.io, unit=unit)))
            except Exception as exc:
                failed[name] = f"attach: {first_line(exc)}"
                continue
            live[name] = target
            units.add(unit)
        after = (await self.control.disks(dom)).targets  # the domain says what happened, not our intentions
        said = statuses(spec, after, Outcome(waiting=waiting, failed=failed))
        # each change noted once, whether or not the report gets through
        for note in changes(self.seen, said, {name for name in steps.attach if name in after}):
            log.info("volume", reason=note.reason, message=note.message)
            await self.note(note)
        self.seen = said
        if said != self.said and await self.report(said):
            self.said = said
        left = plan(spec, after)
        return self.said == said and not left.attach and not left.detach

    async def _ready_file(self, claim: str) -> tuple[str, Path | None]:
        """The volume's file here once it is ready, or why not yet."""
        await self.volumes.synced()
        record = self.volumes.get(claim)
        if record is None:
            return f"volume {claim} not found", None
        if record.node is None:
            return f"volume {claim} is not on a node yet", None
        if record.node != self.node:
            return f"volume {claim} is on node {record.node}, not on {self.node} where the VM runs", None
        if record.phase is VolumePhase.FAILED:
            return f"volume {claim} failed: {record.reason}", None
        if record.phase is not VolumePhase.READY:
            done = f" ({record.progress.done} of {record.progress.total} bytes)" if record.progress.total else ""
            return f"volume {claim} is {record.phase.value}{done}", None
        path = volume_path(self.volumes_dir, record)
        if not await asyncio.to_thread(path.exists):
            return f"volume {claim} is Ready but its file is not on this node yet", None
        return "", path
