"""The create path with fewer round trips (bench/api_create.py): a VM created through the API gets
one instance with its SuccessfulCreate event, names stay unique across API replicas in the queue
group, and a node's status report written on the leader's copy of its VMI lands only when that copy
is current; a stale copy is judged again on what the store holds, so what the node may not say is
still refused and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client

from proto import subjects
from proto.errors import ApiError, Code
from proto.nodeapi import StatusReport
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodeapi import NodeApi
from servicekit.endpoints import serve
from servicekit.store import Change, Entry, Store
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration


def manifest(name: str, strategy: str = "Always") -> bytes:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": strategy, "template": {"spec": {"domain": {
                           "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}}).encode()


async def wait_for(check: object, what: str, within: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def leading(store: Store) -> AsyncIterator[Scheduler]:
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()


async def events_of(store: Store, reason: str) -> list[str]:
    names: list[str] = []
    sub = await store.js.subscribe(subjects.EVENTS_ALL, ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return names
            event = json.loads(msg.data)
            if event["reason"] == reason:
                names.append(event["name"])
    finally:
        await sub.unsubscribe()


async def test_created_vms_get_one_instance_each_with_its_event(store: Store, leading: Scheduler) -> None:
    api = Api(store)
    replies = await asyncio.gather(*(api.vm_create(manifest(f"vm{i}")) for i in range(20)))
    assert all(r.item.vmi is None for r in replies)  # the view shows the instance as read at create: none yet

    async def all_have_one() -> bool:
        vmis = {e.key: e.value for e in await store.vmis.items()}
        return len(vmis) == 20 and all(not v.standalone for v in vmis.values())

    await wait_for(all_have_one, "an instance for each of the 20 VMs")
    uids = {e.key: e.value.uid for e in await store.vmis.items()}
    # the watch brings more changes of them (the controller's own create among them): still one each
    await asyncio.sleep(0.5)
    assert {e.key: e.value.uid for e in await store.vmis.items()} == uids
    await leading.events.flushed()
    assert sorted(await events_of(store, "SuccessfulCreate")) == sorted(f"vm{i}" for i in range(20))


async def test_an_instance_the_cache_has_not_seen_is_not_made_twice(store: Store, leading: Scheduler) -> None:
    """The VM controller creates without reading the instance first: the create's CAS on absence is
    the check, so one written meanwhile (not in the leader's cache yet) stays the only one."""
    api = Api(store)
    await api.vm_create(manifest("vm1"))
    first = await _eventually(store, "vm1")
    deadline = time.monotonic() + 10
    while "vm1" not in leading.vmis.entries:  # the store has it a moment before the leader's watch brings it
        assert time.monotonic() < deadline, "the leader's watch never brought the instance"
        await asyncio.sleep(0.05)
    leading.vmis.entries.pop("vm1")  # the cache missing it, as while its watch was behind
    await leading.reconcile_vm("vm1")
    after = await store.vmis.require("vm1", "VMI")
    assert after.value.uid == first.value.uid


async def _eventually(store: Store, name: str) -> Entry[VMI]:
    deadline = time.monotonic() + 10
    while (entry := await store.vmis.get(name)) is None:
        assert time.monotonic() < deadline, f"no instance of {name}"
        await asyncio.sleep(0.05)
    return entry


async def test_names_stay_unique_across_api_replicas(store: Store, nats_server: NatsServer) -> None:
    """Three API replicas in the queue group, each its own connection, and the same 30 names sent by
    4 clients at once: each name created once, every other answer a typed AlreadyExists."""
    conns = [await Store.connect(nats_server.url, f"replica{i}", creds=nats_server.creds("control"),
                                 inbox=subjects.inbox_prefix("control")) for i in range(3)]
    services = [await serve(c.nc, name="virtbus-api", version="0.1.0", description="test",
                            queue=subjects.API_QUEUE, endpoints=Api(c).endpoints()) for c in conns]
    clients = [await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin")) for _ in range(4)]
    try:
        async def create(nc: Client, name: str) -> dict[str, object]:
            msg = await nc.request(subjects.api("vm", "create"), manifest(name, "Halted"), timeout=10)
            reply: dict[str, object] = json.loads(msg.data)
            return reply

        names = [f"vm{i}" for i in range(30)]
        replies = await asyncio.gather(*(create(nc, n) for n in names for nc in clients))
        made = [r for r in replies if "item" in r]
        refused = [r for r in replies if "error" in r]
        assert len(made) == 30 and len(refused) == 90
        assert all(r["error"]["code"] == Code.ALREADY_EXISTS.value  # type: ignore[index]
                   and r["error"]["field"] == "metadata.name" for r in refused)  # type: ignore[index]
        assert sorted(e.key for e in await store.vms.items()) == sorted(names)
        # and bad input through a replica: a typed error, nothing written
        msg = await clients[0].request(subjects.api("vm", "create"), b'{"kind": "VirtualMachine", "metadata": '
                                       b'{"name": "../x"}}', timeout=10)
        assert json.loads(msg.data)["error"]["code"] in (Code.INVALID.value, Code.BAD_REQUEST.value)
        assert len(await store.vms.items()) == 30
    finally:
        for nc in clients:
            await nc.close()
        for service in services:
            await service.stop()
        for c in conns:
            await c.close()


def bound(name: str, node: str, uid: str = "u1") -> VMI:
    return VMI(name=name, uid=uid, spec=VMSpec(name=name), created_at=time.time(), node_name=node,
               phase=Phase.SCHEDULED)


async def test_a_report_on_a_current_copy_is_one_write(store: Store) -> None:
    rev = await store.vmis.create("vm1", bound("vm1", "node1"))
    copy = await store.vmis.require("vm1", "VMI")
    reads = 0
    real_get = store.vmis.get

    async def counted(key: str) -> Entry[VMI] | None:
        nonlocal reads
        reads += 1
        return await real_get(key)

    store.vmis.get = counted  # type: ignore[method-assign]
    api = NodeApi(store, cached_vmi=lambda name: copy if name == "vm1" else None)
    reply = await api.status(subjects.nodeapi("node1", "status"),
                             msgspec.json.encode(StatusReport(vmi="vm1", uid="u1", phase=Phase.RUNNING)))
    store.vmis.get = real_get  # type: ignore[method-assign]
    assert reply.applied and reply.phase is Phase.RUNNING and reads == 0
    entry = await store.vmis.require("vm1", "VMI")
    assert entry.value.phase is Phase.RUNNING and entry.revision > rev


async def test_a_stale_copy_is_judged_again_on_the_store(store: Store) -> None:
    # the copy: not bound yet (the bind is in the store, not yet in the copy): on the copy the node
    # would be refused; the store says it runs it, so its report lands
    unbound = VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=time.time())
    rev = await store.vmis.create("vm1", unbound)
    await store.vmis.update("vm1", bound("vm1", "node1"), rev)
    api = NodeApi(store, cached_vmi=lambda name: Entry("vm1", unbound, rev))
    reply = await api.status(subjects.nodeapi("node1", "status"),
                             msgspec.json.encode(StatusReport(vmi="vm1", uid="u1", phase=Phase.RUNNING)))
    assert reply.applied and (await store.vmis.require("vm1", "VMI")).value.phase is Phase.RUNNING

    # the copy: still instance u1 on node1; the store: a new instance u2 meanwhile. The old
    # instance's report is refused (typed), and the new one is left as it is
    current = await store.vmis.require("vm1", "VMI")
    old_copy = current
    await store.vmis.update("vm1", bound("vm1", "node1", uid="u2"), current.revision)
    before = await store.vmis.require("vm1", "VMI")
    api = NodeApi(store, cached_vmi=lambda name: old_copy)
    with pytest.raises(ApiError) as refused:
        await api.status(subjects.nodeapi("node1", "status"),
                         msgspec.json.encode(StatusReport(vmi="vm1", uid="u1", phase=Phase.FAILED, reason="x")))
    assert refused.value.code is Code.CONFLICT
    assert await store.vmis.require("vm1", "VMI") == before


async def test_another_nodes_report_is_refused_whatever_the_copy_says(store: Store) -> None:
    # the copy from before the instance moved to node1: node2 ran it then; its late report is
    # refused, judged on the store's node1 (the write on the old copy fails its CAS)
    first = await store.vmis.create("vm1", bound("vm1", "node2"))
    rev = await store.vmis.update("vm1", bound("vm1", "node1"), first)
    api = NodeApi(store, cached_vmi=lambda name: Entry("vm1", bound("vm1", "node2"), first))
    with pytest.raises(ApiError) as refused:
        await api.status(subjects.nodeapi("node2", "status"),
                         msgspec.json.encode(StatusReport(vmi="vm1", uid="u1", phase=Phase.RUNNING)))
    assert refused.value.code is Code.FORBIDDEN
    entry = await store.vmis.require("vm1", "VMI")
    assert entry.revision == rev and entry.value.phase is Phase.SCHEDULED


async def test_a_vm_the_running_watch_did_not_bring_is_read_before_its_instance_is_made(
        store: Store, leading: Scheduler) -> None:
    """A VM in the leader's cache that the running vms watch has not brought (deleted while no watch
    ran: the deletion is never delivered) is read again before its instance is made: none is made."""
    spec = VMSpec(name="ghost", memory="64Mi")
    leading.vms.apply(Change("ghost", VM(spec=spec, created_at=time.time()), 10**6))  # in no watch's stream
    await leading.reconcile_vm("ghost")
    assert await store.vmis.get("ghost") is None
