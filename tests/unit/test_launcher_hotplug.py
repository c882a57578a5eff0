"""The launcher's hotplug keeper (launcher.hotplug) against a stateful fake of the domain's disks and
of the volumes bucket: it attaches a volume once its file is ready on its node, detaches what the
spec dropped (also when the guest lets go only later), says each volume's status, notes each change
once, and tries again what failed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from launcher.hotplug import HotplugKeeper
from launcher.hotplugplan import LiveDisks
from proto.hotplug import AddVolumeRequest, added
from proto.nodeapi import EventNote
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume
from proto.state import HotplugPhase, PersistentVolume, VolumePhase, VolumeStatus
from servicekit.paths import volume_path

BASE = VMSpec(name="vm1", disks=[Disk(name="root")],
              volumes=[Volume(name="root", source=PersistentVolumeClaim(claim_name="rootvol"))])
WITH_DATA = added(BASE, AddVolumeRequest(name="vm1", volume_name="data", serial="S1"))


class FakeDisks:
    """A domain's disks: attached at once; detached at once, or only by the keeper's next look (a guest
    slow to let go: the read back in the same look still has it)."""

    def __init__(self) -> None:
        self.live: dict[str, str] = {"root": "vda"}
        self.units: dict[str, int] = {}  # the LUNs of the scsi disks
        self.xml: list[str] = []
        self.slow_unplug = False
        self.going: dict[str, int] = {}  # name -> reads left before it is gone
        self.unplug_reads = 1
        self.detaches: list[str] = []  # every detach asked
        self.fail_attach = 0

    async def disks(self, dom: Any) -> LiveDisks:
        for name in list(self.going):
            self.going[name] -= 1
            if self.going[name] < 0:
                self.live.pop(name, None)
                self.units.pop(name, None)
                del self.going[name]
        return LiveDisks(targets=dict(self.live), units=frozenset(self.units.values()))

    async def attach(self, dom: Any, xml: str) -> None:
        if self.fail_attach:
            self.fail_attach -= 1
            raise RuntimeError("internal error: unable to execute QEMU command 'device_add'\nmore")
        alias = re.search(r'<alias name="ua-([^"]+)"', xml)
        target = re.search(r'<target dev="([^"]+)"', xml)
        unit = re.search(r'<address type="drive" controller="0" bus="0" target="0" unit="(\d+)"', xml)
        assert alias and target and unit and target.group(1) not in self.live.values()
        assert int(unit.group(1)) >= 1 and int(unit.group(1)) not in self.units.values()  # never LUN 0 (hotplug.py)
        self.xml.append(xml)
        self.live[alias.group(1)] = target.group(1)
        self.units[alias.group(1)] = int(unit.group(1))

    async def detach(self, dom: Any, name: str) -> None:
        assert name in self.live
        self.detaches.append(name)
        if self.slow_unplug:
            self.going[name] = self.unplug_reads
        else:
            del self.live[name]


class FakeVolumes:
    """The volumes' records as the launcher's informer has them; each write is heard as a change by
    every follower (a keeper each), from when it began to follow."""

    def __init__(self) -> None:
        self.records: dict[str, PersistentVolume] = {}
        self.followers: list[asyncio.Queue[str]] = []

    @property
    def followed(self) -> bool:
        return bool(self.followers)

    async def synced(self) -> None:
        pass

    def get(self, name: str) -> PersistentVolume | None:
        return self.records.get(name)

    def put(self, record: PersistentVolume) -> None:
        self.records[record.name] = record
        for queue in self.followers:
            queue.put_nowait(record.name)

    async def changes(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.followers.append(queue)
        while True:
            yield await queue.get()


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.disks = FakeDisks()
        self.volumes = FakeVolumes()
        self.reports: list[list[VolumeStatus]] = []
        self.notes: list[EventNote] = []
        self.reachable = True
        self.dir = tmp
        self.keeper = HotplugKeeper(self.disks, self.volumes, lambda: "dom", self.report, self.note, node="node1",
                                    volumes_dir=tmp)

    async def report(self, volumes: list[VolumeStatus]) -> bool:
        if self.reachable:
            self.reports.append(volumes)
        return self.reachable

    async def note(self, note: EventNote) -> None:
        self.notes.append(note)

    def volume(self, phase: VolumePhase, node: str | None = "node1", *, file: bool = True) -> PersistentVolume:
        record = PersistentVolume(name="data", uid="uid-data", size="64Mi", created_at=1.0, node=node, phase=phase)
        self.volumes.put(record)
        if file:
            path = volume_path(self.dir, record)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        return record

    def last(self, name: str) -> VolumeStatus | None:
        return next((s for s in self.reports[-1] if s.name == name), None)


async def test_a_volume_is_attached_once_its_file_is_ready_and_said_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keeper.want(BASE)
    assert await h.keeper.sync()
    assert h.reports == [[VolumeStatus(name="root", target="vda")]] and h.notes == []  # the boot's disks
    h.volume(VolumePhase.POPULATING, file=False)
    h.keeper.want(WITH_DATA)
    assert not await h.keeper.sync()  # waiting: looked at again
    data = h.last("data")
    assert data is not None and data.phase is HotplugPhase.PENDING and "Populating" in data.message
    assert h.disks.xml == []
    record = h.volume(VolumePhase.READY)
    assert await h.keeper.sync()
    data = h.last("data")
    assert data is not None and (data.phase, data.target, data.reason) == (HotplugPhase.READY, "sda", "VolumeReady")
    xml = h.disks.xml[0]
    assert f'<source file="{volume_path(tmp_path, record)}"' in xml and '<target dev="sda" bus="scsi"' in xml
    assert "<serial>S1</serial>" in xml and 'type="qcow2"' in xml
    assert [n.reason for n in h.notes] == ["VolumeReady"]
    assert await h.keeper.sync() and len(h.reports) == 3  # nothing new: nothing said again


async def test_a_volume_not_here_or_failed_waits_with_the_reason(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keeper.want(WITH_DATA)
    for make, why in ((lambda: None, "not found"),
                      (lambda: h.volume(VolumePhase.READY, file=False), "its file is not on this node"),
                      (lambda: h.volume(VolumePhase.READY, node="node2"), "on node node2"),
                      (lambda: h.volume(VolumePhase.READY, node=None), "not on a node yet"),
                      (lambda: h.volume(VolumePhase.FAILED), "failed")):
        make()
        assert not await h.keeper.sync()
        data = h.last("data")
        assert data is not None and data.phase is HotplugPhase.PENDING and why in data.message, (why, data)
    assert h.disks.xml == []


async def test_an_attach_that_fails_is_said_and_tried_again(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.volume(VolumePhase.READY)
    h.disks.fail_attach = 1
    h.keeper.want(WITH_DATA)
    assert not await h.keeper.sync()
    data = h.last("data")
    assert data is not None and data.reason == "AttachFailed" and data.message.startswith("attach: internal error")
    assert "\n" not in data.message
    assert await h.keeper.sync()
    assert h.disks.live == {"root": "vda", "data": "sda"}


async def test_a_dropped_volume_is_detached_and_its_going_noted_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.volume(VolumePhase.READY)
    h.keeper.want(WITH_DATA)
    assert await h.keeper.sync()
    h.disks.slow_unplug = True
    h.keeper.want(BASE)
    assert not await h.keeper.sync()
    data = h.last("data")
    assert data is not None and data.phase is HotplugPhase.DETACHING and data.target == "sda"
    assert await h.keeper.sync()
    assert h.reports[-1] == [VolumeStatus(name="root", target="vda")] and h.disks.live == {"root": "vda"}
    assert [n.reason for n in h.notes] == ["VolumeReady", "VolumeUnplugged"]


async def test_a_report_that_does_not_get_through_is_said_again_and_events_are_not(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.volume(VolumePhase.READY)
    h.keeper.want(BASE)
    assert await h.keeper.sync()
    h.reachable = False
    h.keeper.want(WITH_DATA)
    assert not await h.keeper.sync()
    assert not await h.keeper.sync()
    h.reachable = True
    assert await h.keeper.sync()
    data = h.last("data")
    assert data is not None and data.phase is HotplugPhase.READY
    assert [n.reason for n in h.notes] == ["VolumeReady"]


async def test_a_stopping_instance_is_left_alone(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.volume(VolumePhase.READY)
    h.keeper.want(WITH_DATA)
    h.keeper.stand_down()
    assert await h.keeper.sync()
    assert h.disks.xml == [] and h.reports == []
    h.keeper.want(msgspec.structs.replace(WITH_DATA, name="vm1"))
    assert await h.keeper.sync() and h.disks.xml == []


async def test_a_hotpluggable_volume_of_the_spec_is_said_pending_with_running_and_attached_after(
        tmp_path: Path) -> None:
    """The boot leaves it out (launcher.domain): the Running report says it Pending, the first look
    attaches it; a volume whose file is not ready never holds the boot."""
    h = Harness(tmp_path)
    h.volume(VolumePhase.READY)
    said = h.keeper.booted(WITH_DATA, {"root": "vda"})
    assert [(s.name, s.target, s.phase) for s in said] == [("root", "vda", None), ("data", "", HotplugPhase.PENDING)]
    h.keeper.want(WITH_DATA)
    assert await h.keeper.sync()
    data = h.last("data")
    assert data is not None and (data.phase, data.target) == (HotplugPhase.READY, "sda")
    assert [n.reason for n in h.notes] == ["VolumeReady"]
    h.keeper.want(WITH_DATA)
    assert await h.keeper.sync() and len(h.reports) == 1  # nothing new said again
    h.keeper.want(BASE)
    assert await h.keeper.sync()
    assert h.reports[-1] == [VolumeStatus(name="root", target="vda")] and [n.reason for n in h.notes] == [
        "VolumeReady", "VolumeUnplugged"]


async def test_a_volume_heard_ready_is_attached_at_once_and_no_records_are_followed_without_one(
        tmp_path: Path) -> None:
    """The keeper waits for a populating volume by its record's changes, not by a poll: with a retry
    far off, the attach follows the record's Ready at once. A guest with nothing hotplugged follows none."""
    h = Harness(tmp_path)
    h.keeper = HotplugKeeper(h.disks, h.volumes, lambda: "dom", h.report, h.note, node="node1", volumes_dir=tmp_path,
                             retry=30.0)
    task = asyncio.create_task(h.keeper.run())
    try:
        h.keeper.want(BASE)
        await asyncio.sleep(0.05)
        assert not h.volumes.followed and h.reports == [[VolumeStatus(name="root", target="vda")]]
        h.volume(VolumePhase.POPULATING, file=False)
        h.keeper.want(WITH_DATA)
        await asyncio.sleep(0.05)
        data = h.last("data")
        assert data is not None and data.phase is HotplugPhase.PENDING and h.volumes.followed
        h.volume(VolumePhase.READY)  # its node populated it: heard
        for _ in range(100):
            if h.disks.live.get("data"):
                break
            await asyncio.sleep(0.01)
        assert h.disks.live == {"root": "vda", "data": "sda"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_detach_under_way_is_not_asked_again_until_it_took_too_long(tmp_path: Path) -> None:
    """Looks woken while a disk goes (its status said, the domain's events) do not ask libvirt again:
    a second ask during the first can leave QEMU holding the file, and the volume could not be put
    back. A disk still there long after is asked again."""
    now = [100.0]
    h = Harness(tmp_path)
    h.keeper = HotplugKeeper(h.disks, h.volumes, lambda: "dom", h.report, h.note, node="node1", volumes_dir=tmp_path,
                             clock=lambda: now[0])
    h.volume(VolumePhase.READY)
    h.keeper.want(WITH_DATA)
    assert await h.keeper.sync()
    h.disks.slow_unplug, h.disks.unplug_reads = True, 6
    h.keeper.want(BASE)
    for _ in range(2):
        assert not await h.keeper.sync()
        now[0] += 1.0
    assert h.disks.detaches == ["data"]
    now[0] += 10.0  # still there: asked again
    assert not await h.keeper.sync()
    assert h.disks.detaches == ["data", "data"]
