"""A launcher's snapshot taker against stateful fakes of its buckets, its node's API (which applies
each report as the control plane does), the snapshot object store and the domain's backup job: a
hotplugged volume not attached yet holds its snapshots (and their VM snapshot's other parts) until
its disk is there, then all are taken in one job."""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from launcher.backup import SnapshotTaker, attached_only, disk_files
from proto.snapshots import SnapshotPhase, SnapshotProgress, VMSnapshot, VolumeSnapshot, apply_snapshot_progress
from proto.state import PersistentVolume
from servicekit.paths import volume_path
from servicekit.store import Entry

VOLS = {n: PersistentVolume(name=n, uid=f"u{n}", size="1Mi", created_at=1.0, node="node1") for n in ("a", "b")}


def snap(volume: str, group: str | None = "g") -> VolumeSnapshot:
    return VolumeSnapshot(name=f"g-{volume}", uid=f"s{volume}", volume=volume, volume_uid=f"u{volume}",
                          volume_size="1Mi", node="node1", created_at=10.0, group=group)


class Bucket:
    def __init__(self, items: dict[str, Any]) -> None:
        self.data = dict(items)

    async def get(self, key: str) -> Entry[Any] | None:
        return Entry(key, self.data[key], 1) if key in self.data else None

    async def items(self) -> list[Entry[Any]]:
        return [Entry(k, v, 1) for k, v in self.data.items()]


@dataclass
class Info:
    size: int
    digest: str


class Objects:
    def __init__(self) -> None:
        self.put_names: list[str] = []

    async def put(self, name: str, reader: Any) -> Info:
        """As nats-py's: the file read by readinto, in chunks."""
        data, chunk = b"", bytearray(7)
        while n := reader.readinto(chunk):
            data += bytes(chunk[:n])
        self.put_names.append(name)
        return Info(len(data), "SHA-256=" + hashlib.sha256(data).hexdigest())


@dataclass
class Store:
    snapshots: Bucket
    vm_snapshots: Bucket
    volumes: Bucket
    snapshot_objects: Objects = field(default_factory=Objects)


class NodeApi:
    """The control plane's side: each report applied to the snapshot's record, as the node API does."""

    def __init__(self, snapshots: Bucket) -> None:
        self.snapshots = snapshots

    async def snapshot_progress(self, report: SnapshotProgress) -> None:
        new = apply_snapshot_progress(self.snapshots.data[report.snapshot], report, "node1", 20.0)
        if new is not None:
            self.snapshots.data[report.snapshot] = new


class Domain:
    """The domain's disks and its backup jobs: a job copies what each disk has into its target."""

    def __init__(self, files: list[str]) -> None:
        self.files = list(files)
        self.jobs: list[list[str]] = []

    async def xml(self, dom: Any) -> str:
        disks = "".join(f"<disk type='file' device='disk'><source file='{f}'/><target dev='sd{chr(97 + i)}'/></disk>"
                        for i, f in enumerate(self.files))
        return f"<domain><devices>{disks}</devices></domain>"

    async def begin(self, dom: Any, backup_xml: str) -> None:
        copied = []
        for disk in ET.fromstring(backup_xml).iterfind("./disks/disk"):
            if disk.get("backup") == "yes":
                target = disk.find("target")
                assert target is not None
                Path(target.get("file", "")).write_bytes(b"what the guest wrote on " + disk.get("name", "").encode())
                copied.append(disk.get("name", ""))
        self.jobs.append(copied)

    async def progress(self, dom: Any) -> tuple[bool, int, int]:
        return False, 1, 1

    async def succeeded(self, dom: Any) -> bool:
        return True


def test_the_files_of_a_domains_disks_and_what_waits_for_one() -> None:
    xml = ("<domain><devices><disk device='disk'><source file='/v/a'/></disk>"
           "<disk device='cdrom'><source file='/w/cidata.iso'/></disk><disk device='disk'/></devices></domain>")
    assert disk_files(xml) == {"/v/a"}
    a, b, solo = snap("a"), snap("b"), snap("c", group=None)
    files: dict[str, str | None] = {"g-a": "/v/a", "g-b": "/v/b", "g-c": "/v/c"}
    assert attached_only([a, b, solo], files, {"/v/a", "/v/c"}) == [solo]  # b waits, and a with it
    assert attached_only([a, b, solo], files, {"/v/a", "/v/b"}) == [a, b]
    assert attached_only([a, b], {**files, "g-b": None}, {"/v/a"}) == [a, b]  # gone: taken, to fail with why


def test_a_vm_snapshot_waits_for_its_hotplugged_volume_to_be_attached_then_is_one_job(tmp_path: Path) -> None:
    vdir, work = tmp_path / "volumes", tmp_path / "vmi"
    work.mkdir()
    path = {n: str(volume_path(vdir, v)) for n, v in VOLS.items()}
    snapshots = Bucket({"g-a": snap("a"), "g-b": snap("b")})
    store = Store(snapshots, Bucket({"g": VMSnapshot(name="g", uid="gu", vm="vm1", created_at=10.0,
                                                       volumes={"a": "g-a", "b": "g-b"})}), Bucket(VOLS))
    domain = Domain([path["a"]])  # b is in the spec, hotplugged, its disk not attached yet
    taker = SnapshotTaker(store, NodeApi(snapshots), vmi="vm1", node="node1",  # type: ignore[arg-type]
                          volumes=["a", "b"], volumes_dir=vdir, workdir=work, domain=lambda: object(),
                          control=domain)

    async def go() -> None:
        await taker.look()
        assert {s.phase for s in snapshots.data.values()} == {SnapshotPhase.PENDING} and domain.jobs == []
        domain.files.append(path["b"])  # attached
        await taker.look()

    asyncio.run(go())
    assert domain.jobs == [["sda", "sdb"]]  # one job, both volumes: one point in time
    done = snapshots.data
    assert {s.phase for s in done.values()} == {SnapshotPhase.READY}
    assert {s.taken_by for s in done.values()} == {"vmi/vm1"} and all(s.online for s in done.values())
    assert sorted(store.snapshot_objects.put_names) == ["sa", "sb"]
    assert list(work.iterdir()) == []  # the copies went once uploaded


def test_a_poke_takes_what_waited(tmp_path: Path) -> None:
    """The runner pokes the taker when its hotplug keeper attached a disk (the VolumeReady event)."""
    vdir, work = tmp_path / "volumes", tmp_path / "vmi"
    work.mkdir()
    snapshots = Bucket({"g-b": replace(snap("b"), group=None)})
    store = Store(snapshots, Bucket({}), Bucket(VOLS))
    domain = Domain([])
    taker = SnapshotTaker(store, NodeApi(snapshots), vmi="vm1", node="node1",  # type: ignore[arg-type]
                          volumes=["b"], volumes_dir=vdir, workdir=work, domain=lambda: object(), control=domain)

    def phase() -> SnapshotPhase:
        return snapshots.data["g-b"].phase  # type: ignore[no-any-return]

    async def go() -> None:
        poked = asyncio.create_task(taker._on_poke())
        try:
            taker.poke()
            await asyncio.sleep(0.05)
            assert phase() is SnapshotPhase.PENDING
            domain.files.append(str(volume_path(vdir, VOLS["b"])))
            taker.poke()
            for _ in range(100):
                if phase() is SnapshotPhase.READY:
                    break
                await asyncio.sleep(0.01)
        finally:
            poked.cancel()

    asyncio.run(go())
    assert snapshots.data["g-b"].phase is SnapshotPhase.READY and domain.jobs == [["sda"]]
