"""HA failover's control-plane half against a real nats-server, on a clock the test turns: an HA
instance whose launcher's lease stops changing is failed over once EXPIRE_AFTER_S has passed (not
before), bound to another node, its old lease removed so a late renewal fails; a VM without the
annotation is left to node lifecycle; the lost node gets nothing new until it beats again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from proto import fencing, subjects
from proto.errors import ApiError, Code
from proto.events import Event
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Node, Phase, VmiLease
from scheduler.controllers import Scheduler
from scheduler.nodewatch import NodeWatch
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

pytestmark = pytest.mark.integration


class Cluster:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = [1000.0]
        self.nodes = NodeWatch(store, clock=lambda: self.clock[0])
        self.scheduler = Scheduler(store, nodes=self.nodes)

    async def vm(self, name: str, node: str, *, ha: bool) -> VMI:
        spec = VMSpec(name=name, memory="64Mi", run_strategy=RunStrategy.ALWAYS, high_availability=ha)
        await self.store.vms.create(name, VM(spec=spec, created_at=time.time()))
        vmi = VMI(name=name, uid=f"{name}-u1", spec=spec, created_at=time.time(), phase=Phase.RUNNING,
                  node_name=node, started_at=time.time())
        # put, not create: the running scheduler may have made the new VM's instance already (its
        # controller creates one from the VM's watch); this one, running on `node`, replaces it.
        await self.store.vmis.put(name, vmi)
        return vmi

    async def beat(self, *names: str) -> None:
        for name in names:
            node = (await self.store.nodes.require(name, "node")).value
            await self.store.nodes.put(name, msgspec.structs.replace(node, heartbeat=node.heartbeat + 1))
        await asyncio.sleep(0.2)

    async def replaced(self, name: str, old_uid: str) -> VMI:
        """The VM's new instance, once it is bound."""
        deadline = time.monotonic() + 10.0
        while True:
            await self.scheduler.check_leases()
            entry = await self.store.vmis.get(name)
            if entry is not None and entry.value.uid != old_uid and entry.value.node_name is not None:
                return entry.value
            assert time.monotonic() < deadline, f"{name} not replaced: {entry.value if entry else None}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def cluster(store: Store) -> AsyncIterator[Cluster]:
    c = Cluster(store)
    for name in ("node1", "node2"):
        await store.nodes.put(name, Node(name=name, cpus=4, memory=2**32, kvm=False, heartbeat=1.0, started_at=0.0))
    watching = asyncio.create_task(c.nodes.run())
    await c.scheduler.start()
    try:
        yield c
    finally:
        await c.scheduler.stop()
        await cancel_and_wait([watching])  # a plain cancel can be lost to a reply


async def test_a_lapsed_lease_fails_the_vm_over_and_only_then(cluster: Cluster) -> None:
    store = cluster.store
    ha = await cluster.vm("ha", "node1", ha=True)
    plain = await cluster.vm("plain", "node1", ha=False)
    key = subjects.vmi_lease("node1", "ha")
    revision = await store.vmi_leases.put(key, VmiLease(uid=ha.uid))
    stale_key = subjects.vmi_lease("node1", "plain")  # a lease nobody needs (not an HA VMI)
    await store.vmi_leases.put(stale_key, VmiLease(uid=plain.uid))
    await asyncio.sleep(0.5)

    # renewed: however much time passes, nothing happens
    for renewals in range(1, 4):
        cluster.clock[0] += fencing.EXPIRE_AFTER_S - 1
        revision = await store.vmi_leases.update(key, VmiLease(uid=ha.uid, renewals=renewals), revision)
        await cluster.beat("node1", "node2")
        await cluster.scheduler.check_leases()
        assert (await store.vmis.require("ha", "VMI")).value.phase is Phase.RUNNING

    # the node is cut off: no renewal, no heartbeat. Just short of the expiry: still Running.
    cluster.clock[0] += fencing.EXPIRE_AFTER_S - 0.5
    await cluster.beat("node2")
    await cluster.scheduler.check_leases()
    assert (await store.vmis.require("ha", "VMI")).value.phase is Phase.RUNNING
    cluster.clock[0] += 1.0
    await cluster.beat("node2")
    # the instance is Failed and fenced, the lapsed lease removed, a new instance bound elsewhere
    replaced = await cluster.replaced("ha", ha.uid)
    assert replaced.node_name == "node2", "the lost node got the instance fenced off it back"
    assert await store.vmi_leases.get(key) is None
    with pytest.raises(ApiError) as late:  # the lost launcher's renewal in flight fails: it fences
        await store.vmi_leases.update(key, VmiLease(uid=ha.uid, renewals=9), revision)
    assert late.value.code is Code.CONFLICT
    vm = (await store.vms.require("ha", "VM")).value
    assert vm.failures == 0 and vm.next_start_at == 0.0, "a lost node is not the VM's failure: no back-off"
    reasons = [e.reason for e in await events(store, "virtualmachineinstance", "ha")]
    assert "NodeLostFencedOff" in reasons
    # the VM without the annotation is node lifecycle's: untouched by the lease, and its stale lease goes
    assert (await store.vmis.require("plain", "VMI")).value.uid == plain.uid
    assert (await store.vmis.require("plain", "VMI")).value.phase is Phase.RUNNING
    assert await store.vmi_leases.get(stale_key) is None

    # node1 beats again: trusted again
    assert cluster.nodes.readiness()["node1"] is False
    await cluster.beat("node1")
    assert cluster.nodes.readiness()["node1"] is True


async def test_time_the_scheduler_could_not_see_is_no_lease_silence(cluster: Cluster) -> None:
    store = cluster.store
    ha = await cluster.vm("ha", "node1", ha=True)
    await store.vmi_leases.put(subjects.vmi_lease("node1", "ha"), VmiLease(uid=ha.uid))
    await asyncio.sleep(0.5)
    cluster.clock[0] += 600.0
    cluster.nodes.resume("reconnected to NATS")  # what the scheduler does when it sees the bus again
    await cluster.scheduler.check_leases()
    assert (await store.vmis.require("ha", "VMI")).value.phase is Phase.RUNNING
    cluster.clock[0] += fencing.EXPIRE_AFTER_S + 0.5  # and then really silent
    await cluster.beat("node2")
    failed_over = await cluster.replaced("ha", ha.uid)
    assert failed_over.spec.high_availability


async def test_an_instance_that_ended_meanwhile_is_not_said_to_be_failed_over(store: Store) -> None:
    """The scheduler's copy of the VMI lags: it still runs there, but its node has reported its end
    just as the lease lapsed. Nothing is written, no failover is announced, the lease stays."""
    clock = [1000.0]
    nodes = NodeWatch(store, clock=lambda: clock[0])
    scheduler = Scheduler(store, nodes=nodes)
    spec = VMSpec(name="ha", memory="64Mi", run_strategy=RunStrategy.ALWAYS, high_availability=True)
    running = VMI(name="ha", uid="ha-u1", spec=spec, created_at=0.0, phase=Phase.RUNNING, node_name="node1")
    revision = await store.vmis.create("ha", running)
    key = subjects.vmi_lease("node1", "ha")
    await store.vmi_leases.put(key, VmiLease(uid="ha-u1"))
    await nodes.prime()
    await scheduler.vmis.prime()
    ended = msgspec.structs.replace(running, phase=Phase.SUCCEEDED)
    await store.vmis.update("ha", ended, revision)  # not yet in the scheduler's copy
    clock[0] += fencing.EXPIRE_AFTER_S + 1
    await scheduler.check_leases()
    assert (await store.vmis.require("ha", "VMI")).value == ended
    assert "NodeLostFencedOff" not in [e.reason for e in await events(store, "virtualmachineinstance", "ha")]
    assert await store.vmi_leases.get(key) is not None


async def events(store: Store, kind: str, name: str) -> list[Event]:
    out: list[Event] = []
    sub = await store.js.subscribe(subjects.event(kind, name), ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:  # noqa: BLE001 - nats' timeout: no more
                return out
            out.append(msgspec.json.decode(msg.data, type=Event))
    finally:
        await sub.unsubscribe()
