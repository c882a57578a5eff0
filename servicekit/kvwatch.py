"""One KV watch as a JetStream consumer we name, filter and delete ourselves.

nats-py's ``kv.watchall()`` makes an unnamed consumer of the whole bucket and, when stopped, only
unsubscribes: the server keeps the consumer until its inactivity threshold (minutes), and a thousand
watchers of a bucket each get every key. Here:
- the filter (``<node>.>``, one key) is part of the consumer-create subject (the named form of the
  JetStream API), so NATS permissions can scope which keys a user may watch (proto.permissions);
- the consumer is deleted when the watch ends, and renamed when nats-py's ordered consumer
  re-creates it after a gap (the old one is deleted then: the same name would be refused);
- the end of the current values is when every key the bucket has (the server's list, asked for once
  the server counts 0 pending, or once more has come than it counted at the first delivery: while
  the keys keep changing the count never reaches 0) has come (``Initial``); the count alone is not
  enough (nats-server 2.15 counts 0 while keys being rewritten are still to come);
- once it has the current values, the watch goes on with a consumer of the changes from the next
  sequence on, not the last-per-subject one (``_follow``: what nats-server costs for each); a watch
  of keys none of which is there starts on such a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from proto import subjects
from proto.errors import ApiError, Code
from servicekit.cancelling import raise_if_cancelling

# A delivery's ack subject: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
# or (servers with domains and account hashes) $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream
# seq>.<consumer seq>.<time>.<pending>[.<token>...]: where the stream's sequence and the count pending are.
_V1_TOKENS = 9
_V2_MIN_TOKENS = 11  # the trailing token may be absent


def delivery(msg: Msg) -> tuple[int, int]:
    """(the stream's sequence: the key's revision, the messages still pending) of a delivery, read off
    its ack subject. nats-py's ``msg.metadata`` reads the same, plus a datetime and three objects per
    message (py-spy: 3 % of the scheduler in a burst of binds)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == _V1_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= _V2_MIN_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[7]), int(tokens[10])
    meta = msg.metadata  # nats-py's own parse: its error for what is no JetStream delivery
    return meta.sequence.stream, meta.num_pending


# A consumer whose watcher vanished without deleting it (the process died) goes after this long.
INACTIVE_S = 60.0
_DELETE_TIMEOUT_S = 2.0
# How long a watch whose server has nothing pending waits for a key it was told of, before it asks
# again which keys there are.
RECHECK_S = 1.0


@dataclass(frozen=True)
class RawUpdate:
    key: str
    value: bytes
    revision: int
    deleted: bool
    pending: int  # how many matching messages the server still has to deliver after this one


def is_deletion(header: dict[str, str] | None) -> bool:
    """Whether a KV message marks its key's going (a delete's marker, or a purge's)."""
    return (header or {}).get(KV_OP) in (KV_DEL, KV_PURGE)


@dataclass(frozen=True, slots=True)
class BucketParts:
    """What a KV bucket is made of on the server: its JetStream context and connection, its stream
    and its subject prefix (``$KV.<bucket>.``). nats-py keeps them private and the KeyValue has no
    accessor; this is the one place that reads them."""

    js: Any
    nc: Any
    stream: str
    pre: str

    @property
    def bucket(self) -> str:
        return self.stream.removeprefix(subjects.KV_STREAM_PREFIX)


def parts(kv: KeyValue) -> BucketParts:
    js: Any = kv._js  # noqa: SLF001 - see BucketParts
    return BucketParts(js=js, nc=js._nc, stream=kv._stream, pre=kv._pre)  # noqa: SLF001


def consumer_name() -> str:
    return f"vbw{secrets.token_hex(8)}"


async def watch(kv: KeyValue, keys: str = ">") -> AsyncGenerator[RawUpdate | None, None]:
    """Every current value matching ``keys`` then every change; ``None`` once, after the current
    values (at once when there are none)."""
    own = parts(kv)
    js, stream, pre, bucket = own.js, own.stream, own.pre, own.bucket
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    # None of the keys there yet (a new node's copies, say): a consumer of the changes from the next
    # sequence on from the start. A last-per-subject one would be switched for it (``_follow``) only
    # when the first key came: a burst of binds to a thousand new nodes re-created a thousand
    # consumers then (py-spy of bench/hollow_nodes.py: 12 % of a hollow worker's CPU). Not asked for
    # a whole bucket: the server's answer lists every key it has.
    empty_at = await _empty_at(js, stream, pre, keys) if keys != ">" else None
    if empty_at is None:
        policy, config = DeliverPolicy.LAST_PER_SUBJECT, ConsumerConfig(name=consumer_name())
    else:
        policy = DeliverPolicy.BY_START_SEQUENCE
        config = ConsumerConfig(name=consumer_name(), opt_start_seq=empty_at + 1)
    try:
        sub = await js.subscribe(f"{pre}{keys}", stream=stream, cb=deliver, ordered_consumer=True,
                                 deliver_policy=policy, inactive_threshold=INACTIVE_S, config=config)
    except nats.js.errors.NotFoundError:
        raise ApiError(Code.UNAVAILABLE, f"bucket {bucket!r} does not exist: the control plane creates it; "
                                         "is the scheduler running?") from None
    except nats.errors.TimeoutError:  # a create NATS refused (permissions) gets no reply at all
        raise ApiError(Code.UNAVAILABLE, f"no watch of {bucket}/{keys}: the server did not answer (refused by "
                                         "this user's permissions, or away)") from None
    _rename_on_reset(js, stream, sub)
    _no_flow_control_poll(sub)
    try:
        initial: Initial | None = Initial()
        following = False  # on a consumer of the changes from a sequence on (``_follow``)
        if empty_at is not None:
            initial, following = None, True
            yield None
        elif (info := await sub.consumer_info()).num_pending == 0 and (
                info.delivered is None or not info.delivered.consumer_seq):
            listed = await _keys(js, stream, pre, keys)
            if listed:  # the server's count missed keys being rewritten (2.15): they are to come
                initial = Initial(wanted=listed)
            else:
                initial = None
                yield None
                # none of the keys is there: the changes from where the consumer began on are all to come
                following = await _follow(sub, info.delivered.stream_seq if info.delivered is not None else 0)
        while True:
            raise_if_cancelling()  # a cancel nats-py's requests swallowed ends the watch here
            if initial is not None and initial.waiting:
                msg = await _next_within(queue, RECHECK_S)
            else:
                msg = await queue.get()
            if msg is None:  # (only while waiting) a key listed then may be gone for good: ask again
                assert initial is not None
                listed = await _keys(js, stream, pre, keys)
                pending = 0
            else:
                revision, pending = delivery(msg)
                key = msg.subject[len(pre):]
                yield RawUpdate(key=key, value=msg.data, revision=revision,
                                deleted=is_deletion(msg.header), pending=pending)
                if initial is None:
                    if not following:
                        following = await _follow(sub)
                    continue
                listed = await _keys(js, stream, pre, keys) if initial.saw(key, pending) else None
            if listed is not None:  # unanswered: the count of pending still ends it
                initial.expect(listed)
            if initial.done(pending):
                initial = None
                yield None
                following = await _follow(sub)
    finally:
        await _end(js, stream, sub)
        raise_if_cancelling()


class Initial:
    """When a watch has every key's current value. Pending 0 is not enough: nats-server 2.15 can count
    0 pending while keys being rewritten are still to come (a read of 220 keys, 20 of them busy,
    ended with the 200 quiet ones), and while the keys keep changing the count may never reach 0 (and
    the count pending at the first delivery, nats.go's rule, misses a key whose value was replaced
    after that, behind other writes). So at pending 0, or once more than that count has come, the keys
    the bucket has are asked for, and the current values end when each has come (a key is delivered at
    least once: its value, a newer one, or its deletion's marker)."""

    def __init__(self, wanted: Iterable[str] | None = None) -> None:
        """``wanted``: the keys, when they were asked for before anything came."""
        self.first_pending: int | None = None
        self.received = 0
        self.pending: int | None = None
        self.seen: set[str] = set()
        self.wanted: set[str] | None = set(wanted) if wanted is not None else None
        # once: an unanswered ask leaves it to pending 0, not to a request per update
        self.asked = wanted is not None

    def saw(self, key: str, pending: int) -> bool:
        """Counts one delivery; True, once, when it is time to ask which keys there are."""
        self.received += 1
        self.pending = pending
        self.seen.add(key)
        if self.first_pending is None:
            self.first_pending = pending
        if self.asked or (pending != 0 and self.received <= self.first_pending):
            return False
        self.asked = True
        return True

    def expect(self, keys: Iterable[str]) -> None:
        self.wanted = set(keys)

    def done(self, pending: int) -> bool:
        if self.wanted is not None:
            return self.wanted <= self.seen
        return pending == 0 and self.asked

    @property
    def waiting(self) -> bool:
        """The server has nothing pending, yet a listed key has not come: wait for it, asking again
        now and then (the key may be gone since it was listed)."""
        return (self.wanted is not None and not self.wanted <= self.seen
                and (self.pending is None or self.pending == 0))


async def _next_within(queue: asyncio.Queue[Msg], within: float) -> Msg | None:
    """The next message, None after ``within`` seconds; unlike asyncio.wait_for, a cancel is never
    lost to a message that came at the same moment (asyncio.wait raises it regardless)."""
    getting = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait({getting}, timeout=within)
    finally:
        if not getting.done():
            getting.cancel()
    return getting.result() if done else None


async def listed(js: Any, stream: str, pre: str, keys: str) -> tuple[list[str], int] | None:
    """The keys matching ``keys`` the bucket has now (with a value or a deletion's marker), and the
    stream's last sequence then; None when the server did not answer."""
    try:
        found = await js.stream_info(stream, subjects_filter=f"{pre}{keys}")
    except Exception:  # noqa: BLE001 - any failure to ask is "no answer"; the caller falls back
        return None
    return [k[len(pre):] for k in (found.state.subjects or {})], int(found.state.last_seq or 0)


async def _keys(js: Any, stream: str, pre: str, keys: str) -> list[str] | None:
    found = await listed(js, stream, pre, keys)
    return None if found is None else found[0]


async def _empty_at(js: Any, stream: str, pre: str, keys: str) -> int | None:
    """The stream's last sequence when it has none of the keys, so that every change to them comes
    after it; None when it has some, or the server did not answer."""
    found = await listed(js, stream, pre, keys)
    return found[1] if found is not None and not found[0] else None


async def _follow(sub: Any, began: int = 0) -> bool:
    """Once the current values are in, the watch goes on with a consumer of every change from the next
    sequence on, as nats-py's ordered consumer does after a gap (its consumer renamed,
    _rename_on_reset): from after the last message handed over, or, none of the keys being there,
    from where the consumer said it began (``began``). The last-per-subject consumer that delivers the
    current values is costly to keep: nats-server 2.9 counts what it has pending after each message it
    delivers by walking every key of the stream (profile of bench/hollow_nodes.py: a third of
    nats-server's CPU at 10,000 keys); from a sequence on, the count looks only at what came after it.
    True once switched (or when there is nothing to switch); False: no sequence to go on from yet."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    sseq = max(getattr(jsi, "_sseq", 0) or 0, began)  # never before what was handed over already
    if jsi is None or not hasattr(jsi, "reset_ordered_consumer"):
        return True
    if not sseq:
        return False  # nothing delivered yet: no sequence to go on from
    with contextlib.suppress(Exception):  # not switched: the last-per-subject consumer still delivers all
        await jsi.reset_ordered_consumer(sseq + 1)
    return True


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
