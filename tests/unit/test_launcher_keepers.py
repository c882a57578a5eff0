"""A launcher's keepers as one (launcher.keepers), against stateful fakes of libvirtd, the domain's
disks and the volumes' records: a hotplugged volume attached smaller than its record asks is grown as
soon as it is attached, with nothing else waking the grower, and whoever waits for the attach hears it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.fake_libvirtd import FakeLibvirtd
from launcher.keepers import Keepers
from launcher.volumegrowth import LiveDisk
from proto.nodeapi import EventNote
from proto.state import VMI, PersistentVolume, Phase, VolumePhase, VolumeStatus
from servicekit.paths import volume_path
from tests.unit.test_launcher_hotplug import WITH_DATA, FakeDisks, FakeVolumes

MI = 2**20


class Sizes:
    """The same domain's disks as FakeDisks has them, with their capacities: an attach is at 64 MiB."""

    def __init__(self, disks: FakeDisks) -> None:
        self.of = disks
        self.capacity: dict[str, int] = {}
        self.grown: list[tuple[str, int]] = []

    async def disks(self, dom: Any) -> dict[str, LiveDisk]:
        return {name: LiveDisk(target, self.capacity.get(name, 64 * MI)) for name, target in self.of.live.items()}

    async def grow(self, dom: Any, target: str, size: int) -> None:
        name = next(n for n, t in self.of.live.items() if t == target)
        self.capacity[name] = size
        self.grown.append((target, size))


async def until(what: Callable[[], object], within: float = 3.0) -> None:
    for _ in range(int(within / 0.01)):
        if what():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never")


async def test_a_volume_attached_smaller_than_its_record_is_grown_at_once_and_its_waiter_told(tmp_path: Path) -> None:
    disks, records = FakeDisks(), FakeVolumes()
    sizes = Sizes(disks)
    notes: list[EventNote] = []
    said: list[list[VolumeStatus]] = []
    ready: list[str] = []

    async def note(n: EventNote) -> None:
        notes.append(n)

    async def report(volumes: list[VolumeStatus]) -> bool:
        said.append(volumes)
        return True

    keepers = Keepers(FakeLibvirtd({"vm1": True}), disks, sizes, records, lambda: "dom", note=note,
                      report_volumes=report, volume_ready=lambda: ready.append("data"), node="node1",
                      volumes_dir=tmp_path)
    tasks = [asyncio.create_task(run) for run in keepers.runs()]
    try:
        # resized to 96Mi while its file was still being made: the grower hears it with nothing attached
        record = PersistentVolume(name="data", uid="uid-data", size="96Mi", created_at=1.0, node="node1",
                                  phase=VolumePhase.POPULATING)
        records.put(record)
        keepers.want(VMI(name="vm1", uid="u1", spec=WITH_DATA, created_at=0.0, node_name="node1",
                         phase=Phase.RUNNING))
        await asyncio.sleep(0.1)
        assert sizes.grown == [] and "data" not in disks.live
        path = volume_path(tmp_path, record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        records.put(PersistentVolume(name="data", uid="uid-data", size="96Mi", created_at=1.0, node="node1",
                                     phase=VolumePhase.READY))
        # attached at its file's 64 MiB, then grown by the attach's own word (the grower's retry is 2 s
        # away and no record changed since)
        await until(lambda: sizes.grown, within=1.5)
        assert sizes.grown == [("sda", 96 * MI)] and ready == ["data"]
        await until(lambda: len(notes) >= 2)
        assert [n.reason for n in notes] == ["VolumeReady", "VolumeExpanded"]

        keepers.stand_down()  # stopping: a resize heard now is left alone
        records.put(PersistentVolume(name="data", uid="uid-data", size="128Mi", created_at=1.0, node="node1",
                                     phase=VolumePhase.READY))
        await asyncio.sleep(0.2)
        assert sizes.grown == [("sda", 96 * MI)]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
