"""One KV watch as a JetStream consumer we name, filter and delete ourselves.

nats-py's ``kv.watchall()`` makes an unnamed consumer of the whole bucket and, when stopped, only
unsubscribes: the server keeps the consumer until its inactivity threshold (minutes), and a thousand
watchers of a bucket each get every key. Here:
- the filter (``<node>.>``, one key) is part of the consumer-create subject (the named form of the
  JetStream API), so NATS permissions can scope which keys a user may watch (proto.permissions);
- the consumer is deleted when the watch ends, and renamed when nats-py's ordered consumer
  re-creates it after a gap (the old one is deleted then: the same name would be refused);
- the end of the current values is taken from the server's count of what the consumer delivered
  and has pending, not from what this client has processed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from proto.errors import ApiError, Code

# A consumer whose watcher vanished without deleting it (the process died) goes after this long.
INACTIVE_S = 60.0
_DELETE_TIMEOUT_S = 2.0
_KV_OP = "KV-Operation"


@dataclass(frozen=True)
class RawUpdate:
    key: str
    value: bytes
    revision: int
    deleted: bool
    pending: int  # how many matching messages the server still has to deliver after this one


def consumer_name() -> str:
    return f"vbw{secrets.token_hex(8)}"


async def watch(kv: KeyValue, keys: str = ">") -> AsyncGenerator[RawUpdate | None, None]:
    """Every current value matching ``keys`` then every change; ``None`` once, after the current
    values (at once when there are none)."""
    js: Any = kv._js  # noqa: SLF001 - nats-py keeps these private; the KeyValue has no accessor
    stream: str = kv._stream  # noqa: SLF001
    pre: str = kv._pre  # noqa: SLF001
    bucket = stream.removeprefix("KV_")
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    try:
        sub = await js.subscribe(f"{pre}{keys}", stream=stream, cb=deliver, ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=INACTIVE_S,
                                 config=ConsumerConfig(name=consumer_name()))
    except nats.js.errors.NotFoundError:
        raise ApiError(Code.UNAVAILABLE, f"bucket {bucket!r} does not exist: the control plane creates it; "
                                         "is the scheduler running?") from None
    except nats.errors.TimeoutError:  # a create NATS refused (permissions) gets no reply at all
        raise ApiError(Code.UNAVAILABLE, f"no watch of {bucket}/{keys}: the server did not answer (refused by "
                                         "this user's permissions, or away)") from None
    _rename_on_reset(js, stream, sub)
    _no_flow_control_poll(sub)
    try:
        info = await sub.consumer_info()
        initial_done = info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq)
        if initial_done:
            yield None
        while True:
            msg = await queue.get()
            meta = msg.metadata
            op = msg.header.get(_KV_OP) if msg.header else None
            yield RawUpdate(key=msg.subject[len(pre):], value=msg.data, revision=meta.sequence.stream,
                            deleted=op in ("DEL", "PURGE"), pending=meta.num_pending)
            if not initial_done and meta.num_pending == 0:
                initial_done = True
                yield None
    finally:
        await _end(js, stream, sub)


async def _end(js: Any, stream: str, sub: Any) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    with contextlib.suppress(Exception):  # gone already, or the connection is: the threshold ends it
        await asyncio.wait_for(js.delete_consumer(stream, sub._consumer), _DELETE_TIMEOUT_S)  # noqa: SLF001


def _no_flow_control_poll(sub: Any) -> None:
    """nats-py polls every 0.25 s, for the life of an ordered consumer, for a flow-control reply it
    had to put off until the messages before it were handed over. With a callback (as here) it counts
    a message handed over once received, so it never puts one off: it answers each flow-control
    request as it comes. The poll only woke every watcher 4 times a second, idle or not."""
    task = getattr(sub._sub._jsi, "_fctask", None)  # noqa: SLF001 - the underlying subscription's state
    if task is not None:
        task.cancel()


def _rename_on_reset(js: Any, stream: str, sub: Any) -> None:
    """nats-py's ordered consumer re-creates its consumer after a gap under the same config: with a
    name, the server refuses it while the old one lives. Delete the old one and take a new name."""
    jsi = sub._sub._jsi  # noqa: SLF001 - the underlying subscription's JetStream state
    recreate = getattr(jsi, "recreate_consumer", None)
    if recreate is None:
        return

    async def renamed() -> None:
        old = sub._consumer  # noqa: SLF001
        with contextlib.suppress(Exception):
            await asyncio.wait_for(js.delete_consumer(stream, old), _DELETE_TIMEOUT_S)
        jsi._ccreq.name = consumer_name()  # noqa: SLF001
        await recreate()

    jsi.recreate_consumer = renamed
