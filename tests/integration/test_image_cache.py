"""The node's image cache against a real nats-server: entries fetched by the launcher's own code,
a deleted image's entry removed (at once, through the store's watch), one an overlay still uses kept;
a copy whose recorded format is not what the node finds never enters the cache."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import time
from pathlib import Path

import pytest
from nats.js.api import ObjectMeta

from handler.imagecache import ImageCache, Why
from launcher.disks import cached_image
from proto import subjects
from proto.imagefacts import ImageRefused, Refusal
from servicekit.store import Store
from tests.conftest import NatsServer


def disk(fill: int) -> bytes:
    return bytes([fill]) * (64 * 512)


async def test_a_deleted_images_entry_goes_and_one_in_use_stays(store: Store, tmp_path: Path) -> None:
    state = tmp_path / "nodes" / "node1"
    cache = state / "images"
    for name, fill in (("used", 1), ("unused", 2), ("kept", 3)):
        await store.images.put(name, disk(fill))
    used, unused, kept = [await cached_image(store.images, n, cache) for n in ("used", "unused", "kept")]
    overlay = state / "vmis" / "vm1" / "root.qcow2"
    overlay.parent.mkdir(parents=True)
    await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(used), "-F", "raw",
                                             str(overlay)], check=True)
    later = time.time() + 3600  # every entry is past its minute of grace
    images = ImageCache(store, "node1", state, clock=lambda: later)
    assert await images.sweep() == []
    running = asyncio.create_task(images.run())
    try:
        await asyncio.sleep(0.5)  # its first sweep, and the watch in place
        await store.images.delete("used")
        await store.images.delete("unused")
        for _ in range(50):  # the watch wakes a sweep long before the minute is up
            if not unused.exists():
                break
            await asyncio.sleep(0.1)
        assert not unused.exists(), "the deleted image's entry was not removed"
        assert used.exists(), "the entry an overlay is backed by was removed"
        assert kept.exists()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    overlay.unlink()
    with open(used, "rb"):  # held open (a QEMU using it as a cdrom, say): still in use
        assert await images.sweep() == []
    assert [(f.path, why) for f, why in await images.sweep()] == [(used, Why.GONE)]


async def test_the_bound_removes_the_least_recently_used(store: Store, tmp_path: Path) -> None:
    state = tmp_path / "state"
    for name, fill in (("old", 1), ("new", 2)):
        await store.images.put(name, disk(fill))
    old = await cached_image(store.images, "old", state / "images")
    new = await cached_image(store.images, "new", state / "images")
    await asyncio.sleep(0.01)
    await cached_image(store.images, "new", state / "images")  # a cache hit counts as a use
    assert new.stat().st_mtime > old.stat().st_mtime
    later = time.time() + 3600
    gone = await ImageCache(store, "node1", state, bound=new.stat().st_blocks * 512, clock=lambda: later).sweep()
    assert [(f.path, why) for f, why in gone] == [(old, Why.LRU)]
    assert new.exists()


async def test_a_copy_that_is_not_what_its_metadata_says_never_enters_the_cache(store: Store, tmp_path: Path) -> None:
    meta = ObjectMeta(headers={"Virtbus-Image-Format": ["qcow2"], "Virtbus-Image-Virtual-Size": ["32768"]})
    await store.images.put("liar", io.BytesIO(disk(7)), meta=meta)
    with pytest.raises(ImageRefused) as caught:
        await cached_image(store.images, "liar", tmp_path / "images")
    assert caught.value.reason is Refusal.MISMATCH
    assert [p.name for p in (tmp_path / "images").rglob("*") if p.is_file()] == []


async def test_a_node_may_list_and_watch_the_store(store: Store, nats_server: NatsServer, tmp_path: Path) -> None:
    """The cleaner runs with the node's credentials: reading the image store is all it needs."""
    await store.images.put("img", disk(1))
    node = await Store.connect(nats_server.url, "node1", creds=nats_server.creds("node-node1"),
                               inbox=subjects.inbox_prefix("node", "node1"), create=False)
    try:
        entry = await cached_image(node.images, "img", tmp_path / "state" / "images")
        later = time.time() + 3600
        images = ImageCache(node, "node1", tmp_path / "state", clock=lambda: later)
        assert await images.sweep() == []
        watching = asyncio.create_task(images._watch_deletes())
        await asyncio.sleep(0.3)
        await store.images.delete("img")
        for _ in range(30):
            if images._wake.is_set():
                break
            await asyncio.sleep(0.1)
        watching.cancel()
        assert images._wake.is_set(), "the node's watch did not see the deletion"
        assert [f.path for f, _ in await images.sweep()] == [entry]
    finally:
        await node.close()
