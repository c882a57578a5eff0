"""The leader watches every VMI once: the VM controller, the binder, the node copies (nodevmis) and the
workloads are fed from one consumer on KV_vmis, and the endpoints controller learns of changes from it
too (Scheduler.vmi_changes); the real Scheduler against a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from proto import subjects
from proto.quantity import parse_bytes
from proto.spec import VMSpec
from proto.state import VMI, Node
from scheduler.controllers import Scheduler
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def beat(store: Store) -> None:
    while True:
        await store.nodes.put("node1", Node(name="node1", cpus=4, memory=parse_bytes("8Gi"), kvm=False,
                                            heartbeat=time.time(), started_at=0.0))
        await asyncio.sleep(1.0)


async def eventually(what: str, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 15
    while not await probe():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_one_watch_feeds_the_binder_the_node_copies_and_the_endpoints(store: Store) -> None:
    beating = asyncio.create_task(beat(store))
    scheduler = Scheduler(store)
    try:
        await asyncio.sleep(0.2)
        await scheduler.start()
        changes = scheduler.vmi_changes()
        await store.vmis.create("lone", VMI(name="lone", uid=str(uuid.uuid4()), created_at=time.time(),
                                            spec=VMSpec(name="lone", memory="64Mi"), standalone=True))
        await asyncio.wait_for(anext(changes), 10)  # the endpoints controller hears of it

        async def copied() -> bool:
            vmi = await store.vmis.get("lone")
            return (vmi is not None and vmi.value.node_name == "node1"
                    and await store.node_vmis("node1").get(subjects.node_vmi("node1", "lone")) is not None)
        await eventually("bound and copied to its node's key", copied)
        consumers = await store.js.consumers_info(subjects.kv_stream(subjects.BUCKET_VMIS))
        assert len(consumers) == 1, [c.config.filter_subject for c in consumers]

        await store.vmis.delete("lone")

        async def gone() -> bool:
            return await store.node_vmis("node1").get(subjects.node_vmi("node1", "lone")) is None
        await eventually("its node copy gone with it", gone)
    finally:
        await scheduler.stop()
        await cancel_and_wait([beating])  # a plain cancel can be lost to a reply
