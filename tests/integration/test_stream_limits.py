"""A thousand nodes each watch the nodes bucket: on the real nats-server (2.15 caps a stream at 1,000
consumers unless the stream names a limit), the control plane's buckets take more, whether it made
them now or an older virtbus made them before."""

from __future__ import annotations

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, KeyValueConfig, StorageType

from proto import subjects
from servicekit import streamlimits
from servicekit.store import Store
from tests.conftest import NatsServer

PAST_THE_DEFAULT = 1_001  # nats-server 2.15's default cap, and one more


async def _consumers(nc: Client, stream: str, count: int) -> int:
    """Durable consumers made on ``stream``, one by one, until ``count`` or the first refusal."""
    js = nc.jetstream()
    for i in range(count):
        try:
            await js.add_consumer(stream, ConsumerConfig(durable_name=f"watcher{i}"))
        except nats.js.errors.APIError as exc:
            assert exc.err_code == 10026, exc  # "maximum consumers limit reached", nothing else
            return i
    return count


def _server_caps(nc: Client) -> bool:
    """nats-server 2.15 and later have the default cap; Debian's 2.9 has none."""
    version = nc.connected_server_version
    return (version.major, version.minor) >= (2, 15)


def _limit_ok(nc: Client, limit: int | None) -> bool:
    """The stream's own limit; on a server without the default cap (Debian's 2.9, which also refuses to
    change a stream's limit) the server's no-limit does as well."""
    return limit == streamlimits.MAX_CONSUMERS or (not _server_caps(nc) and streamlimits.names_no_limit(limit))


async def test_a_new_control_plane_makes_buckets_and_streams_past_the_default(store: Store) -> None:
    js = store.nc.jetstream()
    for stream in (subjects.kv_stream(subjects.BUCKET_NODES), subjects.kv_stream(subjects.NODE_VMI_BUCKETS[0]),
                   subjects.object_stream(subjects.OBJECT_STORE_IMAGES), subjects.STREAM_EVENTS):
        assert _limit_ok(store.nc, (await js.stream_info(stream)).config.max_consumers), stream
    nodes = subjects.kv_stream(subjects.BUCKET_NODES)
    try:
        assert await _consumers(store.nc, nodes, PAST_THE_DEFAULT) == PAST_THE_DEFAULT
    finally:
        await js.delete_stream(nodes)  # its thousand consumers would hold the server's stop up 10 s


async def test_buckets_made_before_get_the_limit_when_the_control_plane_opens_them(nats_server: NatsServer) -> None:
    admin = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin"))
    try:
        js = admin.jetstream()
        # as the code before made it: nats-py's KV stream, max_consumers -1
        await js.create_key_value(KeyValueConfig(bucket=subjects.BUCKET_NODES, history=5, storage=StorageType.FILE))
        nodes = subjects.kv_stream(subjects.BUCKET_NODES)
        assert streamlimits.names_no_limit((await js.stream_info(nodes)).config.max_consumers)
        made = await _consumers(admin, nodes, PAST_THE_DEFAULT)
        if _server_caps(admin):
            assert made == 1_000  # the refusal the hollow nodes met
        store = await Store.connect(nats_server.url, "control", creds=nats_server.creds("control"),
                                    inbox=subjects.inbox_prefix("control"))
        try:
            info = await js.stream_info(nodes)
            assert _limit_ok(admin, info.config.max_consumers)
            assert info.config.max_msgs_per_subject == 5  # the rest of the bucket as it was
            assert info.state.consumer_count == made
            await js.add_consumer(nodes, ConsumerConfig(durable_name="one-more"))
            # and a second control plane's open changes nothing
            again = await Store.connect(nats_server.url, "control-2", creds=nats_server.creds("control"),
                                        inbox=subjects.inbox_prefix("control"))
            await again.close()
            assert _limit_ok(admin, (await js.stream_info(nodes)).config.max_consumers)
        finally:
            await store.close()
            await js.delete_stream(nodes)  # as above: a quick stop of the server
    finally:
        await admin.close()
