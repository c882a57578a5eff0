"""Opening the buckets, on a real nats-server with authentication: a stream made by hand under a
bucket's name (KV_<bucket>, without a bucket's history per key) is refused by name when the control
plane or a node opens them, and left as it was; a node started before the control plane waits for
them, a server that stops answering meanwhile (SIGSTOP) included."""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import pytest
from nats.js.api import StreamConfig

from proto import subjects
from proto.errors import ApiError, Code
from servicekit.store import Store
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration


async def hand_made(nats_server: NatsServer, bucket: str) -> StreamConfig:
    """A plain stream on the bucket's subjects, as an admin's `nats stream add` would make it."""
    nc = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin"))
    try:
        js = nc.jetstream()
        return (await js.add_stream(name=subjects.kv_stream(bucket),
                                    subjects=[f"{subjects.kv_subject(bucket)}>"])).config
    finally:
        await nc.close()


async def config_of(store: Store, bucket: str) -> StreamConfig:
    return (await store.js.stream_info(subjects.kv_stream(bucket))).config


async def test_a_hand_made_stream_under_a_buckets_name_is_refused_by_name_and_left_alone(
        nats_server: NatsServer) -> None:
    made = await hand_made(nats_server, subjects.BUCKET_NETWORKS)
    with pytest.raises(ApiError) as refused:
        await Store.connect(nats_server.url, "test-control", creds=nats_server.creds("admin"))
    assert refused.value.code is Code.INTERNAL
    assert "KV_networks is not the key-value bucket 'networks'" in str(refused.value)
    # the control plane's connect went on to nothing else of it: no republish, no consumer limits
    admin = await Store.connect(nats_server.url, "test-admin", creds=nats_server.creds("admin"), check=False)
    try:
        assert await config_of(admin, subjects.BUCKET_NETWORKS) == made
    finally:
        await admin.close()


async def test_a_node_refuses_a_hand_made_stream_in_place_of_a_bucket(nats_server: NatsServer) -> None:
    control = await Store.connect(nats_server.url, "test-control", creds=nats_server.creds("admin"))
    try:
        await control.js.delete_stream(subjects.kv_stream(subjects.BUCKET_SERVICES))
        made = await hand_made(nats_server, subjects.BUCKET_SERVICES)
        with pytest.raises(ApiError) as refused:
            await Store.connect(nats_server.url, "test-node1", creds=nats_server.creds("node-node1"),
                                inbox=subjects.inbox_prefix("node", "node1"), create=False)
        assert refused.value.code is Code.INTERNAL
        assert "KV_services is not the key-value bucket 'services'" in str(refused.value)
        assert await config_of(control, subjects.BUCKET_SERVICES) == made
    finally:
        await control.close()


async def test_a_node_waits_for_the_buckets_through_a_server_that_stops_answering(
        nats_server: NatsServer) -> None:
    connecting = asyncio.create_task(Store.connect(
        nats_server.url, "test-node1", creds=nats_server.creds("node-node1"),
        inbox=subjects.inbox_prefix("node", "node1"), create=False))
    control: Store | None = None
    try:
        await asyncio.sleep(1.5)
        assert not connecting.done(), "the node did not wait for the control plane's buckets"
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(7)  # longer than a JetStream request's 5 s: one of the node's goes unanswered
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        assert not connecting.done(), f"the node gave up: {connecting.exception()!r}"
        control = await Store.connect(nats_server.url, "test-control", creds=nats_server.creds("admin"))
        node = await asyncio.wait_for(connecting, 30)
        try:
            assert set(node.raw) == set(subjects.STATE_BUCKETS)
            assert await node.nodes.get("node1") is None  # it reads them
        finally:
            await node.close()
    finally:
        if not connecting.done():
            connecting.cancel()
        if control is not None:
            await control.close()
