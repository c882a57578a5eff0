"""nats-server restarted under a node watch: the time without it counts for no node, and heartbeats
after it are seen again (the watch resumed, or was started again)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import msgspec
import pytest

from proto.state import Node
from scheduler.nodewatch import NodeWatch
from servicekit.store import Store
from tests.conftest import NatsServer, end_process, restart_nats_server

pytestmark = pytest.mark.integration


def port_open(url: str) -> bool:
    host, port = url.removeprefix("nats://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


async def test_a_restart_of_nats_is_nobodys_silence(nats_server: NatsServer, nats_url: str, tmp_path: Path) -> None:
    store = await Store.connect(nats_url, "scheduler-under-test")  # closed before the second server ends
    clock = [100.0]
    watch = NodeWatch(store, clock=lambda: clock[0])
    node = Node(name="node1", cpus=1, memory=2**30, kvm=False, heartbeat=1.0, started_at=0.0)
    await store.nodes.put("node1", node)
    task = asyncio.create_task(watch.run())
    again: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(0.5)
        assert watch.seen["node1"].since == 100.0
        clock[0] += 500.0  # the scheduler's clock runs on while the bus is away
        again = await restart_nats_server(nats_server, tmp_path, down_s=1.5)
        deadline = time.monotonic() + 15
        while not (port_open(nats_server.url) and store.nc.is_connected):
            assert time.monotonic() < deadline, "no reconnect"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * 0.5 + 0.2)  # the connection is polled every 0.5 s
        assert watch.seen["node1"].since == 600.0, "the outage was counted as the node's silence"

        clock[0] += 1.0
        deadline = time.monotonic() + 20
        beat = 2.0
        while watch.seen["node1"].heartbeat != beat - 1.0 or not watch.seen["node1"].beating:
            assert time.monotonic() < deadline, "heartbeats after the restart are not seen"
            with contextlib.suppress(Exception):  # JetStream may still be starting
                await store.nodes.put("node1", msgspec.structs.replace(node, heartbeat=beat))
                beat += 1.0
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await store.close()
        await end_process(again)  # ours; the fixture ends the first one
