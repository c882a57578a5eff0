"""A handler follows its node's VMI copies as their shard republishes them (servicekit.kvlive), on a
real nats-server with authentication: it hears its own copies come, change and go, nothing of another
node's, holds no consumer once it has the current values, and a reconnect during which it missed a
copy is mended."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from handler import nodevmis
from proto import subjects
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VMI, Phase
from servicekit.store import Change, Store
from tests.conftest import NatsServer, end_process, restart_nats_server

pytestmark = pytest.mark.integration


def vmi(name: str, node: str, phase: Phase = Phase.SCHEDULED) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=phase, node_name=node)


def copy(name: str, node: str, revision: int, phase: Phase = Phase.SCHEDULED) -> NodeVmi:
    return NodeVmi(vmi=vmi(name, node, phase), revision=revision)


async def node_store(nats_server: NatsServer, node: str) -> Store:
    return await Store.connect(nats_server.url, f"test-{node}", creds=nats_server.creds(f"node-{node}"),
                               inbox=subjects.inbox_prefix("node", node), create=False)


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def collect(store: Store, node: str, into: list[Change[NodeVmi]]) -> None:
    async for change in nodevmis.informer(store, node).changes():
        into.append(change)


def phases(heard: list[Change[NodeVmi]], key: str) -> list[Phase | None]:
    return [c.value.vmi.phase if c.value else None for c in heard if c.key == key]


async def test_a_handler_hears_its_copies_republished_and_holds_no_consumer(
        nats_server: NatsServer, store: Store) -> None:
    shard = store.node_vmis("node1")
    await shard.put("node1.old", copy("old", "node1", 1))
    node1 = await node_store(nats_server, "node1")
    heard: list[Change[NodeVmi]] = []
    task = asyncio.create_task(collect(node1, "node1", heard))
    try:
        await until(lambda: phases(heard, "node1.old") == [Phase.SCHEDULED])
        stream = subjects.kv_stream(subjects.node_vmis_bucket("node1"))
        assert (await store.js.stream_info(stream)).state.consumer_count == 0  # the current values' is gone
        received = node1.nc.stats["in_msgs"]
        for i in range(5):  # another node's copies, in every shard: nothing reaches node1
            await store.node_vmis(f"other{i}").put(f"other{i}.b", copy("b", f"other{i}", 2))
        await shard.put("node1.new", copy("new", "node1", 3))
        await shard.put("node1.old", copy("old", "node1", 4, Phase.RUNNING))
        await shard.delete("node1.new")
        await until(lambda: phases(heard, "node1.new") == [Phase.SCHEDULED, None])
        await until(lambda: phases(heard, "node1.old") == [Phase.SCHEDULED, Phase.RUNNING])
        assert node1.nc.stats["in_msgs"] - received == 3  # its three changes, nothing else
        assert all(c.key.startswith("node1.") for c in heard)
        assert [e.key for e in await nodevmis.informer(node1, "node1").items()] == ["node1.old"]
        assert (await store.js.stream_info(stream)).state.consumer_count == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await node1.close()


async def test_a_node_may_not_hear_another_nodes_republished_copies(nats_server: NatsServer) -> None:
    """Nor any bucket's republished writes but those every node follows whole (tests/integration/
    test_followed_buckets.py)."""
    refused: list[str] = []

    async def failed(exc: Exception) -> None:
        refused.append(str(exc).lower())

    nc = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("node-node1"), error_cb=failed,
                            inbox_prefix=subjects.inbox_prefix("node", "node1"), allow_reconnect=False)
    try:
        allowed = [subjects.node_vmis_republished_of_node("node1"),
                   *(f"{subjects.kv_republished(b)}.>" for b in subjects.FOLLOWED_BUCKETS)]
        for subject in allowed:
            await nc.subscribe(subject)
        for subject in (subjects.node_vmis_republished_of_node("node2"), f"{subjects.NODE_VMIS_REPUBLISHED}.>",
                        f"{subjects.kv_republished(subjects.BUCKET_VMIS)}.>", f"{subjects.KV_REPUBLISHED}.>"):
            await nc.subscribe(subject)
        await nc.flush()
        await until(lambda: len(refused) >= 4)
        await asyncio.sleep(0.3)  # and no more come
        assert len(refused) == 4 and all("permissions violation for subscription" in r for r in refused)
        assert not any(f'"{subject.lower()}"' in r for subject in allowed for r in refused)
    finally:
        await nc.close()


async def test_a_copy_written_while_the_node_was_away_is_heard_after_it_reconnects(
        nats_server: NatsServer, nats_url: str, tmp_path: Path) -> None:
    control = await Store.connect(nats_url, "control-under-test")
    node1 = await node_store(nats_server, "node1")
    heard: list[Change[NodeVmi]] = []
    task = asyncio.create_task(collect(node1, "node1", heard))
    again: asyncio.subprocess.Process | None = None
    try:
        await control.node_vmis("node1").put("node1.before", copy("before", "node1", 1))
        await until(lambda: phases(heard, "node1.before") == [Phase.SCHEDULED])
        node1.nc.options["reconnect_time_wait"] = 10  # the node comes back well after the control plane
        again = await restart_nats_server(nats_server, tmp_path)
        deadline = time.monotonic() + 20
        while True:  # written as soon as the control plane is back, while the node is still away
            assert time.monotonic() < deadline, "the control plane never wrote the copy"
            with contextlib.suppress(Exception):
                await control.node_vmis("node1").put("node1.meanwhile", copy("meanwhile", "node1", 2))
                break
            await asyncio.sleep(0.2)
        assert not node1.nc.is_connected, "the node was back first: this test proves nothing"
        await until(lambda: phases(heard, "node1.meanwhile") == [Phase.SCHEDULED], within=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for s in (node1, control):
            with contextlib.suppress(Exception):
                await s.close()
        await end_process(again)  # ours; the fixture ends the first one
