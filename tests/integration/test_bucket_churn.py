"""Keys that come and go leave nothing behind but their going: a bucket with churn (VMIs created and
deleted, again and again) never fills up with the revisions of keys long gone, on a real nats-server."""

from __future__ import annotations

import pytest
from nats.js.api import KeyValueConfig, StorageType

from proto.errors import ApiError, Code
from proto.spec import VMSpec
from proto.state import VM
from servicekit.store import Bucket, Store

pytestmark = pytest.mark.integration


def vm(name: str, created_at: float) -> VM:
    return VM(spec=VMSpec(name=name, labels={"pad": "x" * 60}), created_at=created_at)


async def test_a_bucket_with_churn_keeps_taking_writes(store: Store) -> None:
    # a bucket as the store makes them (history of 5, a byte limit, new writes refused when full), small
    kv = await store.js.create_key_value(KeyValueConfig(bucket="churn", history=5, storage=StorageType.FILE,
                                                        max_bytes=256 * 1024))
    bucket = Bucket(kv, VM)
    size = len(bucket._encode("vm0", vm("vm0", 0.0)))  # noqa: SLF001 - how much each revision takes
    cycles = 2 * 256 * 1024 // (4 * size)  # twice what the bucket would hold of every revision kept
    for i in range(cycles):
        name = f"vm{i}"  # each a name of its own, as a replica set's generated ones are
        revision = await bucket.create(name, vm(name, float(i)))
        for j in range(3):
            revision = await bucket.update(name, vm(name, float(i) + j / 10), revision)
        if i % 2:
            await bucket.delete(name, revision)  # as a compare-and-delete
        else:
            await bucket.delete(name)
        assert await bucket.get(name) is None
    info = await store.js.stream_info("KV_churn")
    assert info.state.bytes < 96 * 1024, info.state  # a marker per name, not every revision ever
    # a delete still loses to a change it has not seen
    revision = await bucket.create("kept", vm("kept", 1.0))
    await bucket.update("kept", vm("kept", 2.0), revision)
    with pytest.raises(ApiError) as stale:
        await bucket.delete("kept", revision)
    assert stale.value.code is Code.CONFLICT
    assert (await bucket.get("kept")) is not None


async def test_a_watch_hears_a_key_go_and_come_back(store: Store) -> None:
    await store.vms.create("a", vm("a", 1.0))
    heard: list[tuple[str, float | None]] = []
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    await store.vms.delete("a")
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    await store.vms.create("a", vm("a", 3.0))
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    assert heard == [("a", 1.0), ("a", None), ("a", 3.0)]
    assert [e.key for e in await store.vms.items()] == ["a"]
