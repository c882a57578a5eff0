"""Online expansion (launcher.volumegrowth): which disks grow, to what, and the keeper against a
stateful fake of the domain's disks and of the volumes' records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from msgspec.structs import replace

from launcher.volumegrowth import Growth, LiveDisk, VolumeGrower, plan
from proto.nodeapi import EventNote
from proto.spec import Disk, Ephemeral, PersistentVolumeClaim, VMSpec, Volume
from proto.state import PersistentVolume

MI = 1 << 20
SPEC = VMSpec(name="vm1", disks=[Disk(name="root"), Disk(name="data"), Disk(name="base")], volumes=[
    Volume(name="root", source=PersistentVolumeClaim(claim_name="root-pvc")),
    Volume(name="data", source=PersistentVolumeClaim(claim_name="data-pvc")),
    Volume(name="base", source=Ephemeral(claim_name="base-pvc"))])


def record(name: str, size: str) -> PersistentVolume:
    return PersistentVolume(name=name, uid=f"u-{name}", size=size, created_at=1.0, node="node1")


def test_only_a_written_volume_whose_record_asks_more_grows_in_whole_sectors() -> None:
    live = {"root": LiveDisk("vda", 64 * MI), "data": LiveDisk("sda", 64 * MI), "base": LiveDisk("vdb", 64 * MI)}
    records = {"root-pvc": record("root-pvc", "64Mi"), "data-pvc": record("data-pvc", "96Mi"),
               "base-pvc": record("base-pvc", "1Gi")}
    assert plan(SPEC, live, records) == [Growth(volume="data", claim="data-pvc", target="sda", size=96 * MI)]
    # the ephemeral use's guest writes an overlay: its volume is not grown under it
    odd = {**records, "data-pvc": record("data-pvc", "100000001")}
    assert plan(SPEC, live, odd)[0].size == 100000256  # QEMU grows by whole sectors
    assert plan(SPEC, {**live, "data": LiveDisk("sda", 128 * MI)}, records) == []  # never shrinks
    assert plan(SPEC, {"root": live["root"]}, records) == []  # not attached (yet): nothing to grow
    assert plan(SPEC, live, {"root-pvc": records["root-pvc"]}) == []  # no record: not ours to grow


class Disks:
    """The domain's disks: a grow changes their capacity, or fails while a job holds the disk."""

    def __init__(self) -> None:
        self.live = {"root": LiveDisk("vda", 64 * MI), "data": LiveDisk("sda", 64 * MI)}
        self.busy = False
        self.grown: list[tuple[str, int]] = []

    async def disks(self, dom: Any) -> dict[str, LiveDisk]:
        return dict(self.live)

    async def grow(self, dom: Any, target: str, size: int) -> None:
        if self.busy:
            raise RuntimeError("block device is in use by block job: backup")
        name = next(n for n, d in self.live.items() if d.target == target)
        self.live[name] = LiveDisk(target, size)
        self.grown.append((target, size))


class Records:
    def __init__(self, *records: PersistentVolume) -> None:
        self.records = {r.name: r for r in records}
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def synced(self) -> None:
        pass

    def get(self, name: str) -> PersistentVolume | None:
        return self.records.get(name)

    def resize(self, name: str, size: str) -> None:
        self.records[name] = replace(self.records[name], size=size)
        self.queue.put_nowait(name)

    async def changes(self) -> AsyncIterator[str]:
        while True:
            yield await self.queue.get()


def test_a_resize_heard_grows_the_disk_once_and_says_so_retrying_while_a_job_holds_it() -> None:
    disks = Disks()
    records = Records(record("root-pvc", "64Mi"), record("data-pvc", "64Mi"), record("base-pvc", "64Mi"))
    notes: list[EventNote] = []

    async def note(n: EventNote) -> None:
        notes.append(n)

    grower = VolumeGrower(disks, records, lambda: "dom", note, retry=0.01)

    async def until(what: Any) -> None:
        for _ in range(300):
            if what():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("never")

    async def go() -> None:
        task = asyncio.create_task(grower.run())
        try:
            grower.want(SPEC)
            await asyncio.sleep(0.05)
            assert disks.grown == []  # nothing asked
            disks.busy = True  # a backup job holds the disk: tried again until it lets go
            records.resize("data-pvc", "96Mi")
            await asyncio.sleep(0.05)
            assert disks.grown == []
            disks.busy = False
            await until(lambda: disks.grown)
            await asyncio.sleep(0.05)  # grown: nothing more to do
        finally:
            task.cancel()

    asyncio.run(go())
    assert disks.grown == [("sda", 96 * MI)]  # once
    assert [(n.reason, n.message) for n in notes] == [("VolumeExpanded", "Volume data-pvc expanded to 96Mi (sda)")]


def test_a_guest_that_writes_no_volume_follows_no_records() -> None:
    class Unfollowed(Records):
        async def changes(self) -> AsyncIterator[str]:
            raise AssertionError("followed")
            yield ""

    async def note(n: EventNote) -> None:
        raise AssertionError(n)

    grower = VolumeGrower(Disks(), Unfollowed(), lambda: "dom", note, retry=0.01)

    async def go() -> None:
        task = asyncio.create_task(grower.run())
        grower.want(VMSpec(name="vm1"))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()

    asyncio.run(go())
    assert not grower.has_claims.is_set()
