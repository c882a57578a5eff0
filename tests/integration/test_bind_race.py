"""Two schedulers race to bind the same instances: CAS on the KV revision lets exactly one win."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from proto import subjects
from proto.quantity import parse_bytes
from proto.spec import VMSpec
from proto.state import VMI, Node, Phase
from scheduler.controllers import Scheduler
from servicekit.store import Store
from tests.kvhistory import key_history

pytestmark = pytest.mark.integration


async def test_exactly_one_bind_wins(nats_url: str, store: Store) -> None:
    other = await Store.connect(nats_url, "second-scheduler")
    try:
        now = time.time()
        for name in ("node1", "node2"):
            await store.nodes.put(name, Node(name=name, cpus=2, memory=parse_bytes("4Gi"), kvm=False,
                                             heartbeat=now, started_at=now))
        first, second = Scheduler(store), Scheduler(other)
        names = [f"vm{i}" for i in range(10)]
        for name in names:
            await store.vmis.create(name, VMI(name=name, uid=str(uuid.uuid4()),
                                              spec=VMSpec(name=name, memory="64M"), created_at=now))
        results = await asyncio.gather(*(s.schedule(n) for n in names for s in (first, second)))
        wins = [results[i] + results[i + 1] for i in range(0, len(results), 2)]
        assert wins == [1] * len(names)
        assert first.counters.binds + second.counters.binds == len(names)
        for name in names:
            entry = await store.vmis.get(name)
            assert entry is not None and entry.value.phase is Phase.SCHEDULED
            assert entry.value.node_name in ("node1", "node2")
            history = await key_history(store.js, subjects.BUCKET_VMIS, name)
            assert sum(1 for h in history if b'"Scheduled"' in h.value) == 1
        # a late scheduler finds nothing left to bind
        assert await first.schedule(names[0]) is False
    finally:
        await other.close()


async def test_unschedulable_instance_says_why(store: Store) -> None:
    now = time.time()
    await store.nodes.put("small", Node(name="small", cpus=1, memory=parse_bytes("128Mi"), kvm=False,
                                        heartbeat=now, started_at=now))
    await store.vmis.create("big", VMI(name="big", uid="u", spec=VMSpec(name="big", memory="1Gi"), created_at=now))
    assert await Scheduler(store).schedule("big") is False
    entry = await store.vmis.get("big")
    assert entry is not None
    assert entry.value.phase is Phase.SCHEDULING and entry.value.node_name is None
    cond = next(c for c in entry.value.conditions if c.type == "PodScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert cond.message == "0/1 nodes are available: 1 Insufficient memory."
