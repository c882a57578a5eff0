"""A node's heartbeat against the real nats-server: once the process watches the node records (as
the agent does for routes), a beat is its lease's put and nothing else, no read of its record; a
deleted record is still put back and a material change of free disk still written."""

from __future__ import annotations

import asyncio
import time

import pytest

from handler import heartbeat
from proto import subjects
from proto.state import Node
from servicekit.informer import shared
from servicekit.store import Store

pytestmark = pytest.mark.integration
GiB = 2**30


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_beat_is_one_lease_put_and_still_mends_the_record(store: Store) -> None:
    node = Node(name="node1", cpus=2, memory=GiB, kvm=False, heartbeat=1.0, started_at=0.0, free_disk=100 * GiB)
    await store.nodes.put("node1", node)
    watched = shared(store, store.nodes)
    await watched.items()
    # after the current values the watch goes on as the stream republishes (servicekit.kvlive): the
    # current values' consumer is deleted, which publishes too, so that is awaited before the beats'
    # publishes are counted
    for _ in range(100):
        if not await store.js.consumers_info(subjects.kv_stream(subjects.BUCKET_NODES)):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the watch of the node records kept a consumer")
    await asyncio.sleep(0.1)
    sent = store.nc.stats["out_msgs"]
    for i in range(5):
        await heartbeat.beat(store, node, 100 * GiB, 10.0 + i)
    assert store.nc.stats["out_msgs"] - sent == 5, "a beat published more than its lease"
    lease = await store.node_leases.get("node1")
    assert lease is not None and lease.value.renewed_at == 14.0

    await store.nodes.delete("node1")
    await until(lambda: "node1" not in watched.entries, "the deletion is not seen")
    await heartbeat.beat(store, node, 100 * GiB, 20.0)
    back = await store.nodes.get("node1")
    assert back is not None and back.value.free_disk == 100 * GiB

    await until(lambda: "node1" in watched.entries, "the record put back is not seen")
    await heartbeat.beat(store, node, 50 * GiB, 21.0)
    moved = await store.nodes.get("node1")
    assert moved is not None and moved.value.free_disk == 50 * GiB
    await watched.stop()
