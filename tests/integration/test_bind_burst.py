"""A burst of instances against nodes that hold fewer: exactly what fits is bound, never more than
a node holds, and the rest say why (the real Scheduler against a real nats-server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from proto import subjects
from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO
from proto.overhead import footprint
from proto.quantity import parse_bytes
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Node, Phase
from scheduler.controllers import Scheduler
from scheduler.placement import vcpus
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

pytestmark = pytest.mark.integration
SIZE = "64Mi"
# node1 runs out of memory after 80 instances, node2 of vCPUs after 70 (7 CPUs, 10:1): 150 in all
NODES = {"node1": (10, 80 * footprint(VMSpec(name="x", memory=SIZE))), "node2": (7, parse_bytes("100Gi"))}


async def heartbeats(store: Store) -> None:
    """The handlers' part: the nodes stay Ready however long the burst takes."""
    while True:
        now = time.time()
        for name, (cpus, memory) in NODES.items():
            await store.nodes.put(name, Node(name=name, cpus=cpus, memory=memory, kvm=False, heartbeat=now,
                                             started_at=0.0))
        await asyncio.sleep(1.0)


def decided(vmi: VMI) -> bool:
    return vmi.node_name is not None or any(c.reason == "Unschedulable" for c in vmi.conditions)


@pytest.mark.parametrize("instances", ["written", "by-the-vm-controller"])
async def test_two_hundred_at_once_on_room_for_one_hundred_fifty(store: Store, instances: str) -> None:
    """written: the instances written beside their VMs, bound by the binder's CAS updates (or made by
    the VM controller first); by-the-vm-controller: only the VMs written, their instances created
    already bound where they fit (scheduler.binder.bind_new), the rest created unbound and refused."""
    beating = asyncio.create_task(heartbeats(store))
    scheduler = Scheduler(store)
    try:
        await asyncio.sleep(0.2)
        await scheduler.start()
        now = time.time()
        names = [f"burst{i}" for i in range(200)]
        # the VMs too, or the VM controller winds their instances down as orphans
        await asyncio.gather(*(store.vms.create(n, VM(spec=VMSpec(name=n, memory=SIZE,
                                                                  run_strategy=RunStrategy.ALWAYS),
                                                      created_at=now)) for n in names))
        if instances == "written":
            await asyncio.gather(*(store.vmis.create(n, VMI(name=n, uid=str(uuid.uuid4()), created_at=now,
                                                            spec=VMSpec(name=n, memory=SIZE,
                                                                        run_strategy=RunStrategy.ALWAYS)))
                                   for n in names), return_exceptions=True)  # or the controller made it first
        deadline = time.monotonic() + 120
        while True:
            vmis = [e.value for e in await store.vmis.items()]
            if len(vmis) == 200 and all(decided(v) for v in vmis):
                break
            assert time.monotonic() < deadline, f"{sum(map(decided, vmis))}/200 decided"
            await asyncio.sleep(0.5)
        await asyncio.sleep(RESYNC_GRACE)  # a resync round more: nothing else gets bound
        vmis = [e.value for e in await store.vmis.items()]
        bound = [v for v in vmis if v.node_name is not None]
        assert len(bound) == 150 and all(v.phase is Phase.SCHEDULED for v in bound)
        per_node = Counter(v.node_name for v in bound)
        assert per_node == {"node1": 80, "node2": 70}
        for name, (cpus, memory) in NODES.items():
            mine = [v for v in bound if v.node_name == name]
            assert sum(footprint(v.spec) for v in mine) <= memory  # guest RAM and overhead
            assert sum(vcpus(v.spec) for v in mine) <= cpus * DEFAULT_CPU_ALLOCATION_RATIO
        left = [v for v in vmis if v.node_name is None]
        assert len(left) == 50
        for v in left:
            cond = next(c for c in v.conditions if c.type == "PodScheduled")
            assert (v.phase, cond.status, cond.reason) == (Phase.SCHEDULING, "False", "Unschedulable")
            assert cond.message == "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        assert scheduler.counters.binds == 150
        if instances == "by-the-vm-controller":  # one write per instance, and one more for each refused
            info = await store.js.stream_info(subjects.kv_stream(subjects.BUCKET_VMIS))
            assert info.state.last_seq == 200 + 50
    finally:
        await cancel_and_wait([beating])  # a plain cancel can be lost to a reply
        await scheduler.stop()


RESYNC_GRACE = 6.0
