"""A deleted key's marker goes after its time to live (servicekit.kvmarkers), on a real nats-server: a
bucket with endless churn keeps taking writes, markers written before markers had a TTL are given one
by the sweep, and a node's live watch takes a key that comes again after its marker went as new."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from proto import subjects
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase
from scheduler.controllers import Scheduler
from servicekit import kvlive, kvmarkers, kvwatch
from servicekit.store import Bucket, Store

pytestmark = pytest.mark.integration
TTL = 1  # seconds: nats-server's least


@pytest.fixture(autouse=True)
def _server_expires(store: Store) -> None:
    # Debian 12's nats-server (2.9, the fallback where the venv lacks the wheel's) keeps every marker
    # for good, as virtbus did before: its deletions are tested in test_bucket_churn.py
    if not kvmarkers.server_expires(store.nc):
        pytest.skip(f"nats-server {store.nc.connected_server_version} has no per-message TTL (2.11 and later)")


def vm(name: str) -> VM:
    return VM(spec=VMSpec(name=name, labels={"pad": "x" * 60}), created_at=1.0)


async def messages(store: Store, stream: str, keys: str = ">") -> int:
    info = await store.js.stream_info(stream, subjects_filter=f"$KV.{stream.removeprefix('KV_')}.{keys}")
    return sum((info.state.subjects or {}).values())


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.2)


async def test_a_deleted_keys_marker_goes_after_its_time_to_live(store: Store) -> None:
    bucket = Bucket(store.raw[subjects.BUCKET_VMS], VM, marker_ttl=TTL)
    revision = await bucket.create("a", vm("a"))
    await bucket.update("a", vm("a"), revision)
    await bucket.delete("a")
    assert await messages(store, "KV_vms", "a") == 1  # the marker, the revisions rolled up into it
    async for change in bucket.watch("a", initial_only=True):  # a watch starting now hears it go
        assert change.value is None
    await until(lambda: _none(messages(store, "KV_vms", "a")))
    assert await bucket.get("a") is None
    assert [c async for c in bucket.watch("a", initial_only=True)] == []  # nothing left to hear
    await bucket.create("a", vm("a"))  # the name is free as before
    assert (await bucket.require("a", "vm")).value.spec.name == "a"


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_a_small_bucket_with_endless_churn_keeps_taking_writes(store: Store) -> None:
    kv = await store.js.create_key_value(KeyValueConfig(bucket="churn", history=5, storage=StorageType.FILE,
                                                        max_bytes=48 * 1024))
    bucket = Bucket(kv, VM, marker_ttl=TTL)
    await bucket.create("probe", vm("probe"))
    await bucket.delete("probe")
    marker = (await store.js.stream_info("KV_churn")).state.bytes
    per_round = int(0.8 * 48 * 1024 / marker)  # most of the bucket in markers
    for rnd in range(3):  # three bucketfuls in all: with markers kept for good the second round fails
        for i in range(per_round):
            name = f"vm{rnd}x{i}"
            await bucket.create(name, vm(name))
            await bucket.delete(name)
        await until(lambda: _none(messages(store, "KV_churn")))
    assert per_round > 100
    assert await bucket.items() == []


async def test_the_sweep_gives_old_markers_a_time_to_live_and_leaves_values(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMS]
    bucket = Bucket(kv, VM)
    for _ in range(3):
        await bucket.put("old", vm("old"))
    await kv.delete("old")  # a plain delete, as virtbus did before: a DEL marker and the revisions kept
    await bucket.put("live", vm("live"))
    await bucket.put("gone", vm("gone"))
    await bucket.delete("gone")  # a marker with a TTL already: left as it is
    assert await messages(store, "KV_vms", "old") == 4
    assert await kvmarkers.sweep(kv, ttl=TTL) == 1
    assert await messages(store, "KV_vms", "old") == 1  # rolled up into one marker
    async with contextlib.aclosing(kvwatch.watch(kv, "old")) as current:
        marker = await anext(current)
    assert marker is not None and marker.deleted and marker.expires
    await until(lambda: _none(messages(store, "KV_vms", "old")))
    assert [e.key for e in await bucket.items()] == ["live"]
    assert await kvmarkers.sweep(kv, ttl=TTL) == 0


async def test_a_live_watch_takes_a_key_back_after_its_marker_went(store: Store) -> None:
    shard_name = subjects.node_vmis_bucket("node1")
    shard = Bucket(store.raw[shard_name], NodeVmi, marker_ttl=TTL)

    def copy(phase: Phase) -> NodeVmi:
        return NodeVmi(vmi=VMI(name="a", uid="a-u", spec=VMSpec(name="a"), created_at=0.0, phase=phase,
                               node_name="node1"), revision=1)

    await shard.put("node1.a", copy(Phase.SCHEDULED))
    await shard.delete("node1.a")
    heard: list[tuple[str, bool]] = []
    ended: list[BaseException] = []

    async def follow() -> None:
        try:
            async for update in kvlive.live(store.raw[shard_name], "node1.*",
                                            subjects.node_vmis_republished(shard_name)):
                if update is not None:
                    heard.append((update.key, update.deleted))
        except Exception as exc:  # noqa: BLE001 - a Gap: the test's failure
            ended.append(exc)

    task = asyncio.create_task(follow())
    try:
        await until(lambda: _true(heard == [("node1.a", True)]))  # the marker, as the current value
        await until(lambda: _none(messages(store, f"KV_{shard_name}", "node1.a")))
        await shard.put("node1.a", copy(Phase.RUNNING))  # the same VMI bound here again
        await shard.delete("node1.a")
        await until(lambda: _true(len(heard) == 3 or bool(ended)))
        assert ended == []  # no gap: the key's first message after its marker went follows nothing
        assert heard == [("node1.a", True), ("node1.a", False), ("node1.a", True)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _true(value: bool) -> bool:
    return value


async def test_a_new_leader_sweeps_markers_left_without_a_time_to_live(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMIS]
    shard: KeyValue = store.raw[subjects.node_vmis_bucket("node1")]
    for bucket_kv, key in ((kv, "old"), (shard, "node1.old")):
        for i in range(3):
            await bucket_kv.put(key, b"{}" if i else b"x")  # the values never read: only their count
        await bucket_kv.delete(key)  # as virtbus deleted before markers had a TTL
    scheduler = Scheduler(store)
    scheduler.sweep_after_s = 0.0
    try:
        await scheduler.start()

        async def swept() -> bool:
            return (await messages(store, "KV_vmis", "old") == 1
                    and await messages(store, f"KV_{subjects.node_vmis_bucket('node1')}", "node1.old") == 1)
        await until(swept)
        for bucket_kv, key in ((kv, "old"), (shard, "node1.old")):
            async with contextlib.aclosing(kvwatch.watch(bucket_kv, key)) as current:
                marker = await anext(current)
            assert marker is not None and marker.deleted and marker.expires
    finally:
        await scheduler.stop()


async def test_a_bucket_made_without_ttls_deletes_as_before_until_the_control_plane_opens_it(store: Store) -> None:
    # a bucket's stream as an older nats-py made it: no AllowMsgTTL
    await store.js.add_stream(StreamConfig(
        name="KV_older", subjects=["$KV.older.>"], allow_rollup_hdrs=True, deny_delete=True,
        discard=DiscardPolicy.NEW, max_msgs_per_subject=5, storage=StorageType.FILE))
    kv = KeyValue(name="older", stream="KV_older", pre="$KV.older.", js=store.js, direct=False)
    bucket = Bucket(kv, VM, marker_ttl=TTL)
    await bucket.create("a", vm("a"))
    await bucket.delete("a")  # refused with a TTL (10166): a marker for good instead
    assert await bucket.get("a") is None
    assert bucket.marker_ttl is None
    async with contextlib.aclosing(kvwatch.watch(kv, "a")) as current:
        marker = await anext(current)
    assert marker is not None and marker.deleted and not marker.expires
    opened = await store.control_bucket("older", VM)  # the control plane opens it: TTLs allowed since
    assert (await store.js.stream_info("KV_older")).config.allow_msg_ttl
    assert opened.marker_ttl == kvmarkers.MARKER_TTL_S
    assert await kvmarkers.sweep(kv, ttl=TTL) == 1
    await until(lambda: _none(messages(store, "KV_older")))
