"""Where a purge that leaves nothing of a key would move other watches (Debian 12's nats-server 2.9),
the leader's sweep only trims deleted keys: their older revisions go, their markers stay
(servicekit.kvmarkers.trim). On both servers virtbus may run on: a trimmed key keeps only its marker,
a watch that had the marker hears every write made while the trims go on, a bucket with churn keeps
taking writes, and the leader trims or sweeps as its server allows."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from proto import subjects
from proto.state import VM
from scheduler.controllers import Scheduler
from servicekit import kvmarkers
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Bucket, Store
from tests.deletions import deleted_around_a_mark, until, vm
from tests.kvhistory import last_sequence, revisions_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("both_servers")]
ROUNDS = 20
BURST = 25


async def test_a_trim_keeps_only_the_markers_of_keys_deleted_before_its_mark(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMS]
    vms = store.vms
    mark = await deleted_around_a_mark(store.js, vms)
    assert await kvmarkers.trim(kv, mark) == 1  # back is not deleted any more when listed
    assert await revisions_of(store.js, "vms", "old") == 1  # its marker alone
    assert await revisions_of(store.js, "vms", "young") == 2
    assert await revisions_of(store.js, "vms", "live") == 2
    assert (await vms.require("back", "vm")).value.created_at == 3.0
    assert sorted(e.key for e in await vms.items()) == ["back", "live"]
    later = await last_sequence(store.js, "vms")
    assert await kvmarkers.trim(kv, later, after=mark) == 1  # young; old was trimmed up to mark
    assert await revisions_of(store.js, "vms", "young") == 1
    await vms.create("old", vm("old", 4.0))  # the name is free as before
    assert (await vms.require("old", "vm")).value.created_at == 4.0


async def test_a_watch_hears_every_write_while_the_markers_it_had_are_trimmed(store: Store) -> None:
    heard: set[str] = set()
    newest = 0  # the stream's sequence of the newest change the watch heard
    primed, all_heard = asyncio.Event(), asyncio.Event()

    async def watch() -> None:
        nonlocal newest
        async for change in store.vms.updates():
            if change is None:
                primed.set()
                continue
            newest = max(newest, change.revision)
            if change.value is not None:
                heard.add(change.key)
                if len(heard) == ROUNDS * BURST:
                    all_heard.set()

    async def trims() -> None:  # as the leader's, at every turn, of the markers the watch already had
        trimmed_to = 0
        while True:
            mark = min(await last_sequence(store.js, "vms"), newest)
            if mark > trimmed_to:
                await kvmarkers.trim(store.raw[subjects.BUCKET_VMS], mark, after=trimmed_to)
                trimmed_to = mark
            await asyncio.sleep(0)

    def burst(rnd: int) -> list[str]:
        return [f"vm{rnd}x{i}" for i in range(BURST)]

    task = asyncio.create_task(watch())
    trimming = asyncio.create_task(trims())
    try:
        await asyncio.wait_for(primed.wait(), 10)
        for rnd in range(ROUNDS):  # a burst of keys written, the burst before deleted, all in flight at once
            await asyncio.gather(*(store.vms.create(name, vm(name)) for name in burst(rnd)),
                                 *(store.vms.delete(name) for name in (burst(rnd - 1) if rnd else [])))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_heard.wait(), 10)
        assert len(heard) == ROUNDS * BURST
        assert sorted(e.key for e in await store.vms.items()) == sorted(burst(ROUNDS - 1))
        assert await revisions_of(store.js, "vms", "vm0x0") == 1  # trimmed meanwhile: a marker alone
    finally:
        await cancel_and_wait([task, trimming])  # a cancel lost as a reply lands hangs (servicekit.cancelling)


async def test_a_bucket_with_churn_keeps_taking_writes_while_trimmed(store: Store) -> None:
    # a bucket as the store makes them (history of 5, a byte limit, new writes refused when full), small
    kv = await store.js.create_key_value(KeyValueConfig(bucket="churn", history=5, storage=StorageType.FILE,
                                                        max_bytes=256 * 1024))
    bucket = Bucket(kv, VM)

    async def churn(name: str) -> None:  # a VM's life: created, changed twice, deleted
        revision = await bucket.create(name, vm(name))
        for j in range(2):
            revision = await bucket.update(name, vm(name, 2.0 + j), revision)
        await bucket.delete(name, revision)

    await churn("probe")
    per_key = (await store.js.stream_info("KV_churn")).state.bytes  # three revisions and a marker
    per_round = int(0.4 * 256 * 1024 / per_key)  # 40 % of the bucket in each round
    mark = trimmed_to = 0
    for rnd in range(5):  # two bucketfuls in all: the third round fails with nothing trimmed
        for i in range(per_round):
            await churn(f"vm{rnd}x{i}")  # each a name of its own, as a replica set's generated ones are
        await kvmarkers.trim(kv, mark, after=trimmed_to)  # the rounds before this one's
        trimmed_to, mark = mark, await last_sequence(store.js, "churn")
    assert await bucket.items() == []
    info = await store.js.stream_info("KV_churn")
    assert info.state.bytes < 0.6 * 256 * 1024  # the last round's revisions and the markers of the rest


async def test_the_leader_trims_or_sweeps_as_its_server_allows(store: Store) -> None:
    kv: KeyValue = store.raw[subjects.BUCKET_VMIS]
    for i in range(3):
        await kv.put("old", b"{}" if i else b"x")  # the values never read: only their count
    await kv.delete("old")
    scheduler = Scheduler(store)
    scheduler.sweep_every_s = 0.5
    left = 0 if kvmarkers.server_purges_safely(store.nc) else 1  # taken out whole, or its marker kept
    try:
        await scheduler.start()

        async def done() -> bool:
            return await revisions_of(store.js, "vmis", "old") == left
        await until(done)
        await asyncio.sleep(1.5)  # three sweeps more: the marker stays where it is kept
        assert await revisions_of(store.js, "vmis", "old") == left
    finally:
        await scheduler.stop()
