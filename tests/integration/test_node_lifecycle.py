"""Node lifecycle's shell against a real nats-server, on a clock the test turns: a node silent past
the threshold is NotReady and its VMI Unknown (never Failed, never deleted), and its VMI is Running
again once its heartbeat moves; the handler's clock is never compared with the scheduler's."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Node, Phase
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodelife import Thresholds
from scheduler.nodewatch import NodeWatch
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

pytestmark = pytest.mark.integration
DAY = 86400.0


async def settle(store: Store, name: str, want: Phase, scheduler: Scheduler) -> VMI:
    deadline = time.monotonic() + 10
    while True:
        await scheduler.check_nodes()
        entry = await store.vmis.get(name)
        assert entry is not None, "the instance was deleted"
        if entry.value.phase is want:
            return entry.value
        assert time.monotonic() < deadline, f"{name} is {entry.value.phase}, not {want}"
        await asyncio.sleep(0.1)


async def test_silent_node_unknown_then_back(store: Store) -> None:
    clock = [1000.0]
    nodes = NodeWatch(store, thresholds=Thresholds(ready_within=15.0, lost_after=40.0), clock=lambda: clock[0])
    # the handler's clock is a day behind the scheduler's: that alone makes nothing stale
    node = Node(name="node1", cpus=2, memory=2**31, kvm=False, heartbeat=time.time() - DAY, started_at=0.0)
    await store.nodes.put("node1", node)
    spec = VMSpec(name="vm1", memory="64Mi", run_strategy=RunStrategy.ALWAYS)
    await store.vms.create("vm1", VM(spec=spec, created_at=time.time()))
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=time.time(), phase=Phase.RUNNING,
                                       node_name="node1", started_at=5.0))
    watching = asyncio.create_task(nodes.run())
    scheduler = Scheduler(store, nodes=nodes)
    api = Api(store, readiness=nodes.readiness)
    try:
        await scheduler.start()
        await asyncio.sleep(0.5)
        assert (await api.node_list(b"{}")).items[0].ready
        clock[0] += 39.0
        await settle(store, "vm1", Phase.RUNNING, scheduler)
        assert not (await api.node_list(b"{}")).items[0].ready  # NotReady past 15 s

        clock[0] += 2.0  # 41 s without a change of heartbeat
        lost = await settle(store, "vm1", Phase.UNKNOWN, scheduler)
        assert lost.phase_before_unknown is Phase.RUNNING
        clock[0] += 600.0  # however long: the VM controller neither deletes nor replaces it
        await asyncio.sleep(1.0)
        lost = await settle(store, "vm1", Phase.UNKNOWN, scheduler)
        assert lost.uid == "u1"

        await store.nodes.put("node1", msgspec.structs.replace(node, heartbeat=node.heartbeat + 600))
        back = await settle(store, "vm1", Phase.RUNNING, scheduler)
        assert (back.uid, back.started_at, back.phase_before_unknown) == ("u1", 5.0, None)
        assert (await api.node_list(b"{}")).items[0].ready
    finally:
        await scheduler.stop()
        await cancel_and_wait([watching])  # a plain cancel can be lost to a reply

