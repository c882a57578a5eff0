"""Moving a volume's bytes: populating its file (blank, from an image, from a snapshot) and copying
a file into the snapshot object store, with progress. Used by the node's handler (population,
snapshots of volumes at rest) and by launchers (a missing file made at start, snapshots of running
guests), so both go through one lock per volume file and write under a temporary name: a file that
exists is whole, and no two processes ever populate one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
from nats.js.object_store import ObjectStore

from proto.errors import ApiError, Code
from proto.quantity import format_bytes, parse_bytes
from proto.snapshots import VolumeSnapshot
from proto.state import PersistentVolume, VolumePhase
from servicekit import imagefile
from servicekit.paths import volume_path
from servicekit.store import Store

Report = Callable[[int, int], Awaitable[None]]  # (bytes done, bytes in all)
REPORT_EVERY_S = 1.0


LOCK_POLL_S = 0.1


@contextlib.asynccontextmanager
async def volume_lock(path: Path, poll: float = LOCK_POLL_S) -> AsyncIterator[None]:
    """The volume file's lock (``.<file>.lock`` beside it), held while it is populated or copied.

    Asked for on the loop, again every ``poll`` seconds, not waited for in a thread: another
    process may hold it for minutes (a large image downloading into the volume), and each waiter
    would hold one of the loop's few default threads all that while (six on a 2-core node; the
    handler's other blocking calls queue behind them). A cancelled wait leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(poll)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Counting:
    """A file whose reads or writes are counted, for progress; nats-py runs them in a thread."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.count = 0

    def readinto(self, buffer: Any) -> int:
        n = int(self.f.readinto(buffer))
        self.count += n
        return n

    def write(self, data: bytes) -> int:
        n = int(self.f.write(data))
        self.count += n
        return n


@contextlib.asynccontextmanager
async def _reporting(counter: _Counting, total: int, report: Report | None) -> AsyncIterator[None]:
    async def every() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            if report is not None:
                with contextlib.suppress(ApiError):  # progress lost is no failure
                    await report(min(counter.count, total), total)

    task = asyncio.create_task(every())
    try:
        yield
    finally:
        task.cancel()


async def upload(objects: ObjectStore, name: str, path: Path, report: Report | None = None) -> tuple[int, str]:
    """The file into the object store as ``name``; (its size, its digest as the store wrote it)."""
    total = path.stat().st_size
    with open(path, "rb") as f:
        counter = _Counting(f)
        async with _reporting(counter, total, report):
            info = await objects.put(name, counter)  # type: ignore[arg-type]
    return int(info.size or 0), str(info.digest or "")


async def download(objects: ObjectStore, name: str, dest: Path, digest: str | None,
                   report: Report | None = None) -> None:
    """The object into dest; its digest checked against the one recorded (the store checks the
    bytes against its own metadata as they come, which anyone able to write the store could change)."""
    try:
        info = await objects.get_info(name)
    except nats.js.errors.NotFoundError:
        raise ApiError(Code.NOT_FOUND, f"object {name} is not in the store") from None
    if digest is not None and info.digest != digest:
        raise ApiError(Code.INVALID, f"object {name} has digest {info.digest}, not the recorded {digest}")
    with open(dest, "wb") as f:
        counter = _Counting(f)
        async with _reporting(counter, int(info.size or 0), report):
            await objects.get(name, writeinto=counter)  # type: ignore[arg-type]


async def populate(volume: PersistentVolume, path: Path, *, images: ObjectStore, snapshot_objects: ObjectStore,
                   snapshot: VolumeSnapshot | None, report: Report | None = None) -> bool:
    """The volume's first content into its file, unless the file is there already (False then).
    snapshot: the record of volume.snapshot, when it has one."""
    async with volume_lock(path):
        if path.exists():
            return False
        size = parse_bytes(volume.size)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        src = path.with_name(f".{path.name}.{os.getpid()}.src")
        try:
            if volume.snapshot is not None:
                if snapshot is None or snapshot.name != volume.snapshot:
                    raise ApiError(Code.NOT_FOUND, f"snapshot {volume.snapshot} not found")
                await download(snapshot_objects, snapshot.uid, tmp, snapshot.digest, report)
                # the node that took it wrote it: a qcow2 naming another file (a backing file, an
                # external data file) would read this node's files into the volume; refused unopened
                if await asyncio.to_thread(imagefile.usable_format, tmp, None) != "qcow2":
                    raise ApiError(Code.INVALID, f"snapshot {snapshot.name} is not a qcow2 of its own")
            elif volume.image is not None:
                await download(images, volume.image, src, None, report)
                fmt = await asyncio.to_thread(imagefile.usable_format, src, None)  # as the image cache judges it
                await run("qemu-img", "convert", "-q", "-f", str(fmt), "-O", "qcow2", str(src), str(tmp))
            else:
                await run("qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size))
            virtual = int(await asyncio.to_thread(_info_field, tmp, "virtual-size"))
            if virtual > size:
                raise ApiError(Code.INVALID, f"its content holds {format_bytes(virtual)}, more than volume "
                               f"{volume.name}'s {format_bytes(size)}")
            if virtual < size:
                await run("qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), str(size))
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
            src.unlink(missing_ok=True)
    return True


async def wait_ready(store: Store, name: str, node: str, poll: float = 0.5) -> PersistentVolume:
    """A volume's record once its node has populated it; ApiError if it is elsewhere or failed."""
    while True:
        record = (await store.volumes.require(name, "volume")).value
        if record.node != node:
            raise ApiError(Code.INVALID, f"volume {name} is on node {record.node}, not on {node}")
        if record.phase is VolumePhase.READY:
            return record
        if record.phase is VolumePhase.FAILED:
            raise ApiError(Code.INVALID, f"volume {name} failed: {record.reason}")
        await asyncio.sleep(poll)


async def ready_here(store: Store, names: list[str], node: str, volumes_dir: Path) -> dict[str, PersistentVolume]:
    """The records of the volumes a launch uses, each once Ready on this node (the binder put it here;
    the node's handler populates it first, a restore or an image, and the guest waits). A volume Ready
    whose file went is made again as the handler would, under its lock."""
    out = {}
    for name in names:
        record = await wait_ready(store, name, node)
        path = volume_path(volumes_dir, record)
        if not path.exists():
            found = await store.snapshots.get(record.snapshot) if record.snapshot else None
            await populate(record, path, images=store.images, snapshot_objects=store.snapshot_objects,
                           snapshot=found.value if found else None)
        out[name] = record
    return out


async def copy_at_rest(path: Path, dest: Path) -> None:
    """A compact qcow2 copy of a volume no guest uses. qemu-img takes QEMU's image locks, so a guest
    started meanwhile cannot write under it (one of the two fails instead)."""
    async with volume_lock(path):
        await run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", str(path), str(dest))


def _info_field(path: Path, field: str) -> Any:
    done = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)[field]


async def run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        what = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {what}")
