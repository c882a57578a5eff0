"""Deleted keys are taken out of their bucket by the leader's sweep (servicekit.kvmarkers), on a real
nats-server: a bucket with churn keeps taking writes, a key is taken out only once its marker is older
than the sweep before and only if it was not written again, and a node's live watch takes a key that
comes back after it was taken out as new."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from proto import subjects
from proto.errors import ApiError, Code
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase
from scheduler.controllers import Scheduler
from servicekit import kvlive, kvmarkers
from servicekit.store import Bucket, Store
from tests.deletions import deleted_around_a_mark, until, vm
from tests.kvhistory import last_sequence, revisions_of

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _server_purges_safely(store: Store) -> None:
    # Debian 12's nats-server (2.9, the fallback where the venv lacks the wheel's) moves every watch
    # on a purge: there nothing is swept, and deleted keys stay as markers with their revisions
    if not kvmarkers.server_purges_safely(store.nc):
        pytest.skip(f"nats-server {store.nc.connected_server_version}: a purge moves other watches")


async def test_the_sweep_takes_out_keys_deleted_before_its_mark_and_nothing_else(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMS]
    vms = store.vms
    mark = await deleted_around_a_mark(store.js, vms)
    assert await revisions_of(store.js, "vms", "old") == 3  # its two revisions and the marker
    assert await kvmarkers.sweep(kv, mark) == 1
    assert await revisions_of(store.js, "vms", "old") == 0  # taken out whole
    assert await revisions_of(store.js, "vms", "young") == 2
    assert (await vms.require("back", "vm")).value.created_at == 3.0
    assert sorted(e.key for e in await vms.items()) == ["back", "live"]
    assert await kvmarkers.sweep(kv, await last_sequence(store.js, "vms")) == 1  # young, at the next
    await vms.create("old", vm("old", 4.0))  # the name is free as before
    assert (await vms.require("old", "vm")).value.created_at == 4.0


async def test_a_bucket_with_churn_keeps_taking_writes_while_swept(store: Store) -> None:
    # a bucket as the store makes them (history of 5, a byte limit, new writes refused when full), small
    kv = await store.js.create_key_value(KeyValueConfig(bucket="churn", history=5, storage=StorageType.FILE,
                                                        max_bytes=256 * 1024))
    bucket = Bucket(kv, VM)
    revision = await bucket.create("probe", vm("probe"))
    for j in range(2):
        revision = await bucket.update("probe", vm("probe", 2.0 + j), revision)
    await bucket.delete("probe", revision)
    per_key = (await store.js.stream_info("KV_churn")).state.bytes  # three revisions and a marker
    per_round = int(0.4 * 256 * 1024 / per_key)  # 40 % of the bucket in each round
    mark = 0
    for rnd in range(5):  # two bucketfuls in all: the third round fails with nothing swept
        for i in range(per_round):
            name = f"vm{rnd}x{i}"  # each a name of its own, as a replica set's generated ones are
            revision = await bucket.create(name, vm(name))
            for j in range(2):
                revision = await bucket.update(name, vm(name, 2.0 + j), revision)
            await bucket.delete(name, revision)  # as a compare-and-delete
        await kvmarkers.sweep(kv, mark)  # the rounds before this one's
        mark = await last_sequence(store.js, "churn")
    assert await bucket.items() == []
    # a delete still loses to a change it has not seen
    revision = await bucket.create("kept", vm("kept"))
    await bucket.update("kept", vm("kept", 2.0), revision)
    with pytest.raises(ApiError) as stale:
        await bucket.delete("kept", revision)
    assert stale.value.code is Code.CONFLICT
    assert (await bucket.get("kept")) is not None


async def test_a_live_watch_takes_a_key_back_after_it_was_taken_out(store: Store) -> None:
    shard_name = subjects.node_vmis_bucket("node1")
    shard = Bucket(store.raw[shard_name], NodeVmi)

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

    async def heard_count(n: int) -> bool:
        return len(heard) >= n or bool(ended)

    task = asyncio.create_task(follow())
    try:
        await until(lambda: heard_count(1))  # the marker, as the current value
        assert await kvmarkers.sweep(store.raw[shard_name], await last_sequence(store.js, shard_name)) == 1
        await shard.put("node1.a", copy(Phase.RUNNING))  # the same VMI bound here again
        await shard.delete("node1.a")
        await until(lambda: heard_count(3))
        assert ended == []  # no gap: the key's first message after it was taken out follows nothing
        assert heard == [("node1.a", True), ("node1.a", False), ("node1.a", True)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_leader_sweeps_deleted_keys_as_it_leads(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMIS]
    shard: KeyValue = store.raw[subjects.node_vmis_bucket("node1")]
    for bucket_kv, key in ((kv, "old"), (shard, "node1.old")):
        for i in range(3):
            await bucket_kv.put(key, b"{}" if i else b"x")  # the values never read: only their count
        await bucket_kv.delete(key)
    scheduler = Scheduler(store)
    scheduler.sweep_every_s = 0.5
    try:
        await scheduler.start()

        async def swept() -> bool:
            return (await revisions_of(store.js, "vmis", "old") == 0
                    and await revisions_of(store.js, subjects.node_vmis_bucket("node1"), "node1.old") == 0)
        await until(swept)
    finally:
        await scheduler.stop()
