"""Scoped watches on a real nats-server with authentication: a handler hears only its own node's
VMIs (the leader's copies, scheduler.nodevmis) and may not watch another node's; a launcher's
watch is its own key; a watch's consumer is gone from the server when the watch ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

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
    while (entry := await store.node_vmis.get(key)) is None or entry.value.vmi.phase is not phase:
        assert time.monotonic() < deadline, key
        await asyncio.sleep(0.05)


async def consumers(store: Store, stream: str) -> list[str]:
    return [c.name for c in await store.js.consumers_info(stream)]


async def test_a_handler_hears_only_its_own_nodes_vmis(nats_server: NatsServer, store: Store) -> None:
    # state from before the bucket's copies existed, and a stray copy: the first term rebuilds
    await store.vmis.create("old1", vmi("old1", "node1"))
    await store.node_vmis.put(subjects.node_vmi("node1", "gone"), NodeVmi(vmi=vmi("gone", "node1"), revision=1))
    mirror = asyncio.create_task(NodeVmiMirror(store).run())
    node1 = await node_store(nats_server, "node1")
    heard: list[Change[NodeVmi]] = []
    watch = asyncio.create_task(collect(node1.node_vmis.watch(subjects.node_vmis_of_node("node1")), heard))
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
        copies = {e.key for e in await store.node_vmis.items()}
        assert {"node1.old1", "node1.a1", "node2.b0", "node2.b4"} <= copies and "node1.gone" not in copies
        # node1 heard a1's copy and its own consumer's heartbeats at most; nothing of b0..b4
        assert not any(c.key.startswith("node2.") for c in heard)
        assert node1.nc.stats["in_msgs"] - received <= 3
        # a VMI deleted or moved to another node: its copy here goes, and the handler hears that
        await store.vmis.mutate("a1", lambda v: vmi("a1", "node2"))
        await until(lambda: any(c.key == "node1.a1" and c.value is None for c in heard))
        await store.vmis.delete("old1")
        await until(lambda: any(c.key == "node1.old1" and c.value is None for c in heard))
        assert (await store.node_vmis.get("node2.a1")) is not None
    finally:
        for task in (watch, mirror):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await node1.close()


async def test_a_node_may_not_watch_another_nodes_copies(nats_server: NatsServer, store: Store) -> None:
    node1 = await node_store(nats_server, "node1")
    try:
        for keys in (subjects.node_vmis_of_node("node2"), ">"):
            with pytest.raises(ApiError, match="permissions"):  # the server refuses the consumer
                async with asyncio.timeout(8):
                    async for _ in node1.node_vmis.watch(keys, initial_only=True):
                        pass
        # its own: allowed (empty)
        assert [c async for c in node1.node_vmis.watch(subjects.node_vmis_of_node("node1"), initial_only=True)] == []
    finally:
        await node1.close()


async def test_a_launchers_watch_is_its_own_key_and_leaves_no_consumer(nats_server: NatsServer, store: Store) -> None:
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
