"""Scoped watches on a real nats-server with authentication: a handler hears only its own node's
VMIs (the leader's copies, scheduler.nodevmis) and may not watch another node's; a node's watch of
one VMI's key hears that key alone; a watch's consumer is gone from the server when the watch ends.
(A launcher follows its own VMI without a consumer: tests/integration/test_launcher_own_vmi.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig

from proto import subjects
from proto.errors import ApiError
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VMI, Phase
from scheduler.nodevmis import NodeVmiMirror
from servicekit.store import Change, Store
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration
VMIS_STREAM = subjects.kv_stream(subjects.BUCKET_VMIS)


def vmi(name: str, node: str | None, phase: Phase = Phase.SCHEDULED) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=phase, node_name=node)


async def node_store(nats_server: NatsServer, node: str, **kw: bool) -> Store:
    return await Store.connect(nats_server.url, f"test-{node}", creds=nats_server.creds(f"node-{node}"),
                               inbox=subjects.inbox_prefix("node", node), create=False, **kw)


async def collect(watch: AsyncIterator[Change[NodeVmi]], into: list[Change[NodeVmi]]) -> None:
    async for change in watch:
        into.append(change)


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def copied(store: Store, key: str, phase: Phase = Phase.SCHEDULED, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    copies = store.node_vmis(subjects.node_vmi_parts(key)[0])
    while (entry := await copies.get(key)) is None or entry.value.vmi.phase is not phase:
        assert time.monotonic() < deadline, key
        await asyncio.sleep(0.05)


async def consumers(store: Store, stream: str) -> list[str]:
    return [c.name for c in await store.js.consumers_info(stream)]


async def test_a_handler_hears_only_its_own_nodes_vmis(nats_server: NatsServer, store: Store) -> None:
    # state from before the bucket's copies existed, and a stray copy: the first term rebuilds
    await store.vmis.create("old1", vmi("old1", "node1"))
    await store.node_vmis("node1").put(subjects.node_vmi("node1", "gone"),
                                       NodeVmi(vmi=vmi("gone", "node1"), revision=1))
    mirror = asyncio.create_task(NodeVmiMirror(store).run())
    node1 = await node_store(nats_server, "node1")
    heard: list[Change[NodeVmi]] = []
    watch = asyncio.create_task(collect(node1.node_vmis("node1").watch(subjects.node_vmis_of_node("node1")), heard))
    try:
        await until(lambda: {c.key for c in heard if c.value} >= {"node1.old1"})
        await until(lambda: any(c.key == "node1.gone" and c.value is None for c in heard) or
                    not any(c.key == "node1.gone" for c in heard))
        received = node1.nc.stats["in_msgs"]
        # another node's VMIs come and change: not one message reaches node1's connection
        for i in range(5):
            await store.vmis.create(f"b{i}", vmi(f"b{i}", "node2"))
        await store.vmis.mutate("b0", lambda v: vmi("b0", "node2", Phase.RUNNING))
        for i in range(1, 5):
            await copied(store, subjects.node_vmi("node2", f"b{i}"))
        await copied(store, "node2.b0", Phase.RUNNING)
        await store.vmis.create("a1", vmi("a1", "node1"))
        await until(lambda: any(c.key == "node1.a1" for c in heard))
        assert all(subjects.node_vmi_parts(c.key)[0] == "node1" for c in heard)
        assert all(c.value is None or c.value.vmi.node_name == "node1" for c in heard)
        copies = {e.key for shard in store.node_vmi_shards.values() for e in await shard.items()}
        assert {"node1.old1", "node1.a1", "node2.b0", "node2.b4"} <= copies and "node1.gone" not in copies
        # node1 heard a1's copy and its own consumer's heartbeats at most; nothing of b0..b4
        assert not any(c.key.startswith("node2.") for c in heard)
        assert node1.nc.stats["in_msgs"] - received <= 3
        # a VMI deleted or moved to another node: its copy here goes, and the handler hears that
        await store.vmis.mutate("a1", lambda v: vmi("a1", "node2"))
        await until(lambda: any(c.key == "node1.a1" and c.value is None for c in heard))
        await store.vmis.delete("old1")
        await until(lambda: any(c.key == "node1.old1" and c.value is None for c in heard))
        assert (await store.node_vmis("node2").get("node2.a1")) is not None
    finally:
        for task in (watch, mirror):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await node1.close()


async def test_a_node_may_not_watch_another_nodes_copies(nats_server: NatsServer, store: Store) -> None:
    node1 = await node_store(nats_server, "node1")
    elsewhere = next(b for b in subjects.NODE_VMI_BUCKETS if b != subjects.node_vmis_bucket("node1"))
    try:
        refused = [(node1.node_vmis("node2"), subjects.node_vmis_of_node("node2")), (node1.node_vmis("node1"), ">"),
                   # its own name's keys, but in a shard not its own
                   (node1.node_vmi_shards[elsewhere], subjects.node_vmis_of_node("node1"))]
        for bucket, keys in refused:
            with pytest.raises(ApiError, match="permissions"):  # the server refuses the consumer
                async with asyncio.timeout(8):
                    async for _ in bucket.watch(keys, initial_only=True):
                        pass
        # its own: allowed (empty)
        own = node1.node_vmis("node1").watch(subjects.node_vmis_of_node("node1"), initial_only=True)
        assert [c async for c in own] == []
    finally:
        await node1.close()


async def test_the_leader_deletes_the_unsharded_copies_once_no_older_handler_watches_them(
        nats_server: NatsServer, store: Store) -> None:
    # as a release before the shards left it: every node's copies in one bucket, watched by a handler
    old = await store.js.create_key_value(bucket=subjects.BUCKET_NODE_VMIS_UNSHARDED, history=5)
    await old.put("node1.old1", msgspec.json.encode(NodeVmi(vmi=vmi("old1", "node1"), revision=1)))
    await store.vmis.create("old1", vmi("old1", "node1"))
    stream = subjects.kv_stream(subjects.BUCKET_NODE_VMIS_UNSHARDED)
    older_handler = await store.js.add_consumer(stream, ConsumerConfig(
        filter_subject=subjects.kv_subject(subjects.BUCKET_NODE_VMIS_UNSHARDED, "node1.*")))
    mirror = asyncio.create_task(NodeVmiMirror(store).run())
    try:
        await copied(store, "node1.old1")  # rebuilt into node1's shard
        await asyncio.sleep(0.5)
        assert (await store.js.stream_info(stream)).state.messages == 1  # still watched: kept
        mirror.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mirror
        await store.js.delete_consumer(stream, older_handler.name or "")  # that handler upgraded
        mirror = asyncio.create_task(NodeVmiMirror(store).run())  # the next term
        with pytest.raises(nats.js.errors.NotFoundError):
            async with asyncio.timeout(10):
                while True:
                    await store.js.stream_info(stream)
                    await asyncio.sleep(0.1)
        assert (await store.node_vmis("node1").get("node1.old1")) is not None
    finally:
        mirror.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mirror


async def test_a_copy_filed_in_another_shard_is_moved_to_where_its_node_watches(
        nats_server: NatsServer, store: Store) -> None:
    # as a release with another count of shards would leave it: node1's copy in a shard not node1's
    right = subjects.node_vmis_bucket("node1")
    wrong = next(b for b in subjects.NODE_VMI_BUCKETS if b != right)
    key = subjects.node_vmi("node1", "old1")
    await store.vmis.create("old1", vmi("old1", "node1", Phase.RUNNING))
    entry = await store.vmis.get("old1")
    assert entry is not None
    await store.node_vmi_shards[wrong].put(key, NodeVmi(vmi=entry.value, revision=entry.revision))
    node1 = await node_store(nats_server, "node1")
    mirror = asyncio.create_task(NodeVmiMirror(store).run())
    try:
        await copied(store, key, Phase.RUNNING)  # in node1's own shard, as new as the VMI
        assert await store.node_vmi_shards[wrong].get(key) is None  # and no longer where it was
        heard = [c.key async for c in node1.node_vmis("node1").watch(subjects.node_vmis_of_node("node1"),
                                                                     initial_only=True)]
        assert heard == [key]  # what node1's handler reads
    finally:
        mirror.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mirror
        await node1.close()


async def test_a_nodes_watch_of_one_vmi_is_that_key_and_leaves_no_consumer(nats_server: NatsServer,
                                                                           store: Store) -> None:
    for name in ("mine", "other"):
        await store.vmis.create(name, vmi(name, "node1"))
    launcher = await node_store(nats_server, "node1", check=False)  # asks the server nothing at connect
    heard: list[str] = []

    async def follow() -> None:
        async for change in launcher.vmis.watch("mine"):
            heard.append(change.key)

    task = asyncio.create_task(follow())
    try:
        await until(lambda: heard == ["mine"])
        assert len(await consumers(store, VMIS_STREAM)) == 1
        await store.vmis.mutate("other", lambda v: vmi("other", "node1", Phase.RUNNING))
        await store.vmis.mutate("mine", lambda v: vmi("mine", "node1", Phase.RUNNING))
        await until(lambda: heard == ["mine", "mine"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await consumers(store, VMIS_STREAM) == []  # deleted when the watch ended, not minutes later
    # reads (items: a watch of the current values) leave none behind either
    assert len(await store.vmis.items()) == 2 and await consumers(store, VMIS_STREAM) == []
    await launcher.close()


async def test_a_missing_bucket_is_named(nats_server: NatsServer, store: Store) -> None:
    await store.js.delete_key_value(subjects.BUCKET_VMIS)
    launcher = await node_store(nats_server, "node1", check=False)
    try:
        with pytest.raises(ApiError, match="bucket 'vmis' does not exist"):
            async for _ in launcher.vmis.watch("mine"):
                pass
    finally:
        await launcher.close()
