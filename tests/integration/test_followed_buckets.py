"""A node follows the buckets every node watches whole (subjects.FOLLOWED_BUCKETS: node records, Services,
node ports, ...) as their streams republish them, on a real nats-server with authentication: it hears
their changes and holds no consumer once it has their current values; a change its subscription never
got is found by the audit of the stream's last sequence and mended; a stream made before it republished
is still followed. What a node may subscribe to: tests/integration/test_live_copies.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

import msgspec
import nats
import nats.js.errors
import pytest
from nats.js.api import KeyValueConfig, RePublish

from handler import nodevmis
from launcher import ownvmi
from proto import subjects
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VMI, Node, Phase, Service, ServicePort, ServiceType
from proto.stored import FOLLOWED_KINDS
from servicekit import kvlive
from servicekit.informer import shared
from servicekit.store import Store
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration
GiB = 2**30


def node(name: str, disk: int = 100) -> Node:
    return Node(name=name, cpus=2, memory=GiB, kvm=False, heartbeat=1.0, started_at=0.0, free_disk=disk * GiB)


def service(name: str) -> Service:
    return Service(name=name, uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.20",
                   selector={"app": name}, ports=[ServicePort(port=80, target_port=8080, name="http")])


async def node_store(nats_server: NatsServer, name: str) -> Store:
    return await Store.connect(nats_server.url, f"test-{name}", creds=nats_server.creds(f"node-{name}"),
                               inbox=subjects.inbox_prefix("node", name), create=False)


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def consumers(store: Store) -> dict[str, int]:
    counts = {}
    for bucket in subjects.FOLLOWED_BUCKETS:
        info = await store.js.stream_info(subjects.kv_stream(bucket))
        counts[bucket] = int(info.state.consumer_count or 0)
    return counts


async def test_a_node_follows_the_shared_buckets_with_no_consumer(nats_server: NatsServer, store: Store) -> None:
    await store.nodes.put("node2", node("node2"))
    node1 = await node_store(nats_server, "node1")
    try:
        records = shared(node1, node1.nodes)
        await records.items()
        for bucket in subjects.FOLLOWED_BUCKETS:  # as the handler's parts open them (empty buckets here)
            await shared(node1, node1.bucket(bucket, FOLLOWED_KINDS[bucket])).items()
        assert await consumers(store) == dict.fromkeys(subjects.FOLLOWED_BUCKETS, 0)
        await store.nodes.put("node3", node("node3"))
        await store.nodes.put("node2", node("node2", disk=50))
        await store.nodes.delete("node3")
        await until(lambda: set(records.entries) == {"node2"}, "node3's coming and going not heard")
        await until(lambda: records.entries["node2"].value.free_disk == 50 * GiB, "node2's change not heard")
        assert await consumers(store) == dict.fromkeys(subjects.FOLLOWED_BUCKETS, 0)
    finally:
        await node1.close()


async def test_a_change_the_subscription_missed_is_found_by_the_audit(
        nats_server: NatsServer, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvlive, "WHOLE_AUDIT_S", 0.3)
    stream = subjects.kv_stream(subjects.BUCKET_NODES)
    wanted = RePublish(src=f"{subjects.kv_subject(subjects.BUCKET_NODES)}>",
                       dest=f"{subjects.republished_at(subjects.BUCKET_NODES)}.>")
    await store.nodes.put("node2", node("node2"))
    node1 = await node_store(nats_server, "node1")
    try:
        records = shared(node1, node1.nodes)
        await records.items()
        info = await store.js.stream_info(stream)
        assert info.config.republish == wanted
        # the stream stops republishing for a moment: what it stores meanwhile never reaches the node
        try:
            await store.js.update_stream(dataclasses.replace(info.config, republish=None))
        except nats.js.errors.ServerError as exc:
            pytest.skip(f"this nats-server cannot take a stream's republish away: {exc.description}")
        assert (await store.js.stream_info(stream)).config.republish is None
        await store.nodes.put("node2", node("node2", disk=50))
        await store.js.update_stream(info.config)
        await asyncio.sleep(0.2)
        assert records.entries["node2"].value.free_disk == 100 * GiB, "heard without the republish: proves nothing"
        await until(lambda: records.entries["node2"].value.free_disk == 50 * GiB, "the missed change never mended")
        await store.nodes.put("node2", node("node2", disk=20))  # and it hears changes again as they come
        await until(lambda: records.entries["node2"].value.free_disk == 20 * GiB, "later changes not heard")
    finally:
        await node1.close()


@pytest.mark.usefixtures("both_servers")
async def test_a_stream_made_before_it_republished_is_still_followed(nats_server: NatsServer, nats_url: str) -> None:
    """An older virtbus made the services bucket without a republish: on 2.15 the control plane gives
    it one as it opens it; 2.9 refuses, and the control plane starts all the same and the nodes watch it
    through a consumer. Either way a node hears its changes."""
    admin = await nats.connect(nats_url, nkeys_seed=nats_server.creds("admin"))
    await admin.jetstream().create_key_value(KeyValueConfig(bucket=subjects.BUCKET_SERVICES, history=5))
    await admin.close()
    control = await Store.connect(nats_url, "control-under-test")
    node1 = await node_store(nats_server, "node1")
    try:
        info = await control.js.stream_info(subjects.kv_stream(subjects.BUCKET_SERVICES))
        republishing = info.config.republish is not None
        assert (subjects.BUCKET_SERVICES in node1.republishing) is republishing
        services = shared(node1, node1.bucket(subjects.BUCKET_SERVICES, Service))
        await services.items()
        await control.bucket(subjects.BUCKET_SERVICES, Service).put("web", service("web"))
        await until(lambda: "web" in services.entries, "the Service written was not heard")
        want = 0 if republishing else 1  # a consumer's watch switches consumers once it has the values
        for _ in range(100):
            left = await control.js.stream_info(subjects.kv_stream(subjects.BUCKET_SERVICES))
            if left.state.consumer_count == want:
                break
            await asyncio.sleep(0.1)
        assert left.state.consumer_count == want
    finally:
        await node1.close()
        await control.close()



@pytest.mark.usefixtures("both_servers")
async def test_a_shard_made_before_it_republished_still_reaches_its_node_and_launchers(
        nats_server: NatsServer, nats_url: str) -> None:
    """node1's shard of VMI copies made by an older virtbus, without a republish: 2.15 is given one; on
    2.9 the handler's copies and a launcher's own VMI are followed through consumers. Either way a
    change to a copy that was there (a stop asked) reaches both."""
    shard = subjects.node_vmis_bucket("node1")
    admin = await nats.connect(nats_url, nkeys_seed=nats_server.creds("admin"))
    await admin.jetstream().create_key_value(KeyValueConfig(bucket=shard, history=5))
    await admin.close()
    control = await Store.connect(nats_url, "control-under-test")
    node1 = await node_store(nats_server, "node1")
    heard: list[NodeVmi] = []

    async def collect() -> None:
        async for change in nodevmis.informer(node1, "node1").changes():
            if change.value is not None:
                heard.append(change.value)

    task = asyncio.create_task(collect())
    own = ownvmi.changes(node1, "node1", "vm1", republished=nodevmis.republishes(node1, "node1"))
    try:
        republishing = (await control.js.stream_info(subjects.kv_stream(shard))).config.republish is not None
        assert nodevmis.republishes(node1, "node1") is republishing
        running = VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, phase=Phase.RUNNING,
                      node_name="node1")
        revision = await control.vmis.put("vm1", running)
        await control.node_vmis("node1").put("node1.vm1", NodeVmi(vmi=running, revision=revision))
        first = await asyncio.wait_for(anext(own), 10)
        assert isinstance(first, VMI) and not first.stop_requested
        await until(lambda: len(heard) == 1, "the copy was not heard")
        stopping = msgspec.structs.replace(running, stop_requested=True)
        revision = await control.vmis.put("vm1", stopping)
        await control.node_vmis("node1").put("node1.vm1", NodeVmi(vmi=stopping, revision=revision))
        await until(lambda: any(c.vmi.stop_requested for c in heard), "the handler never heard the stop")
        later = await asyncio.wait_for(anext(own), 10)
        assert isinstance(later, VMI) and later.stop_requested, "the launcher never heard the stop"
    finally:
        await own.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await node1.close()
        await control.close()
