"""servicekit.jspublish against a real nats-server: a publish is acknowledged with its stream and
sequence, and each way it can fail raises what nats-py's own publish raises, so every caller's
clauses (the store's CONFLICT, UNAVAILABLE) hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from servicekit.connection import connect_nats
from servicekit.jspublish import RETRIES, RETRY_WAIT_S, JetStream

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect_nats(nats_url, "jspublish-test")
    try:
        await client.jetstream().add_stream(StreamConfig(name="JSPUB", subjects=["jspub.>"]))
        yield client
    finally:
        await client.jetstream().delete_stream("JSPUB")
        await client.drain()


async def test_many_publishes_at_once_are_each_acknowledged_once_in_order_stored(nc: Client) -> None:
    js = JetStream(nc)
    acks = await asyncio.gather(*(js.publish(f"jspub.{i}", str(i).encode()) for i in range(500)))
    assert {a.stream for a in acks} == {"JSPUB"}
    assert sorted(a.seq for a in acks) == list(range(1, 501))
    stored = await nc.jetstream().get_msg("JSPUB", acks[123].seq)
    assert stored.data == b"123" and stored.subject == "jspub.123"
    await js.close()


async def test_a_refused_write_raises_nats_pys_own_error(nc: Client) -> None:
    js = JetStream(nc)
    first = await js.publish("jspub.key", b"1")
    with pytest.raises(nats.js.errors.BadRequestError) as stale:  # a compare-and-set lost
        await js.publish("jspub.key", b"2", headers={"Nats-Expected-Last-Subject-Sequence": str(first.seq + 10)})
    assert stale.value.err_code == 10071
    with pytest.raises(nats.js.errors.APIError):  # a stream expected by name that is not this one
        await js.publish("jspub.key", b"3", stream="OTHER")
    started = asyncio.get_running_loop().time()
    with pytest.raises(nats.js.errors.NoStreamResponseError):  # no stream takes the subject
        await js.publish("nostream.key", b"4")
    # it was tried again, as nats.go's publish is, before it was given up
    assert asyncio.get_running_loop().time() - started >= RETRIES * RETRY_WAIT_S
    assert (await js.publish("jspub.key", b"5")).seq == first.seq + 1  # nothing else was stored
    await js.close()


async def test_a_publish_no_stream_took_yet_is_stored_once_the_stream_takes_its_subject(nc: Client) -> None:
    """On a cluster, a stream's subject is taken only where its leader is, and the other servers hear of
    it a moment later: a publish in that moment is answered 503 (no responders), and tried again."""
    js = JetStream(nc)
    publishing = asyncio.create_task(js.publish("late.key", b"kept"))
    await asyncio.sleep(RETRY_WAIT_S / 2)  # the first try has been answered 503 by now
    assert not publishing.done()
    await nc.jetstream().add_stream(StreamConfig(name="LATE", subjects=["late.>"]))
    try:
        ack = await publishing
        assert ack.stream == "LATE"
        stored = await nc.jetstream().get_msg("LATE", ack.seq)
        assert stored.data == b"kept"
        assert (await nc.jetstream().stream_info("LATE")).state.messages == 1  # stored once
    finally:
        await nc.jetstream().delete_stream("LATE")
        await js.close()


async def test_an_unanswered_publish_times_out_and_close_fails_what_still_waits(nc: Client) -> None:
    silent = await nc.subscribe("silent.>")  # takes the message, answers nothing
    js = JetStream(nc, timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish("silent.a", b"x")
    assert 0.4 < loop.time() - started < 3
    assert (await js.publish("jspub.after", b"y")).seq >= 1  # the next one is not held up

    slow = JetStream(nc, timeout=30)
    waiting = asyncio.create_task(slow.publish("silent.b", b"z"))
    await asyncio.sleep(0.2)
    await slow.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await waiting
    await silent.unsubscribe()
    await js.close()
