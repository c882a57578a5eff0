"""A KV watch that follows its keys as their stream republishes what it stores (JetStream's
RePublish), over a plain subscription, once a consumer has given their current values: a node's
watch of its own VMI copies (a few keys), and every process's watch of a bucket every node follows
whole (subjects.FOLLOWED_BUCKETS: node records, Services, node ports, ...).

Why: a consumer is kept by the server for as long as its watch runs. A node's watch of its own VMI
copies was a consumer filtered to ``<node>.*`` on its shard, and nats-server 2.15 finds each such
consumer's next match by reading every message written to the shard since its last
(``msgBlock.firstMatching``): 18-31 % of nats-server's CPU binding 10,000 VMIs on 1,000 hollow nodes
(docs/benchmarks.md). A handler's whole-bucket watches were ten more consumers per node, each with its
idle heartbeats and tens of KiB of the server's memory. A republished message reaches a subscription
by the server's subject routing, as any message does; the stream republishes it only once it is stored.

What a plain subscription does not promise, and what is done about it (each ends the watch with
``Gap``; the informer starts it again and mends its cache from the new current values):
- messages lost while the connection was down: a reconnect ends the watch;
- a message lost on the way (a route between clustered servers cut):
  - each republished message names the sequence of its key's message before it (Nats-Last-Sequence);
    one that does not follow the last this watch had of that key ends the watch;
  - a watch of a few keys compares, every AUDIT_S, the keys the stream has with those it knows, for a
    key whose only message was lost (still missing at the next audit: one just written may not have
    come yet);
  - a watch of a whole bucket hears every message its stream stores, in order: one whose sequence
    does not follow the last ends it, and every WHOLE_AUDIT_S the stream's last sequence (one small
    answer, however many keys) tells whether the last messages before the audit came.
The current values come from a consumer of each key's last message (servicekit.kvwatch), made after
the subscription and deleted once they are in: what was written in between comes twice, and the later
copy is passed over by its sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RePublish, StreamInfo
from nats.js.kv import KeyValue

from servicekit import connection, kvwatch
from servicekit.cancelling import raise_if_cancelling

log = structlog.get_logger()
AUDIT_S = 60.0
# A whole bucket's loss is found as the next message comes; the audit is for the last ones written,
# lost between clustered servers while no connection dropped: every five minutes, as KubeVirt's
# informers resync (launcher.ownvmi does the same), so a thousand nodes' ten followed buckets cost the
# server 33 small requests a second, not a heartbeat from ten thousand consumers every five seconds.
WHOLE_AUDIT_S = 300.0
_SEQUENCE = "Nats-Sequence"
_LAST = "Nats-Last-Sequence"
_SUBJECT = "Nats-Subject"
_REPUBLISH_FIXED = 10052  # JSStreamInvalidConfigF: "stream configuration update can not change RePublish"


class Gap(Exception):
    """The watch may have missed a change: it has to start over from the current values."""


class Verdict(enum.Enum):
    APPLY = "apply"
    SKIP = "skip"  # had already (the current values' consumer gave it, or a second copy)
    GAP = "gap"


@dataclass
class Known:
    """The last sequence this watch has of each key, deletions' markers included (pure)."""

    revisions: dict[str, int] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)  # keys whose last message here was their deletion
    missing: frozenset[str] = frozenset()  # keys the last audit found and the watch did not know
    # A watch of the whole bucket hears every message its stream stores, in order: ``highest`` is the
    # sequence up to which it has had them all (the stream's last when the watch began, then each
    # republished message that follows it), ``expected`` the stream's last at the audit before.
    whole: bool = False
    highest: int = 0
    expected: int = 0

    def note(self, key: str, revision: int, *, deleted: bool = False) -> None:
        if revision > self.revisions.get(key, 0):
            self.revisions[key] = revision
            self._mark(key, deleted)

    def judge(self, key: str, sequence: int, last: int, *, deleted: bool = False) -> Verdict:
        """A republished message of ``key`` at ``sequence``, its key's message before it at ``last``
        (0: none). After a deletion, 0 is what follows once the sweep took the key out (servicekit.kvmarkers)."""
        if self.whole:
            if sequence > self.highest + 1:
                return Verdict.GAP  # the stream stored something in between that never came
            self.highest = max(self.highest, sequence)
        had = self.revisions.get(key, 0)
        if sequence <= had:
            return Verdict.SKIP
        if last != had and not (last == 0 and key in self.deleted):
            return Verdict.GAP
        self.revisions[key] = sequence
        self._mark(key, deleted)
        return Verdict.APPLY

    def audit(self, listed: list[str]) -> bool:
        """The keys the stream has now; True when one of them has been missing since the last audit.
        A deleted key the stream no longer has (the sweep took it out) is forgotten."""
        have = frozenset(listed)
        for key in [k for k in self.deleted if k not in have]:
            self.deleted.discard(key)
            del self.revisions[key]
        unknown = have - self.revisions.keys()
        lost = bool(unknown & self.missing)
        self.missing = unknown
        return lost

    def audit_sequence(self, last: int) -> bool:
        """A watch of the whole bucket: True when the stream had, at the audit before, a message this
        watch has not heard (the last ones written: a lost one before another is found as that one
        comes). The stream's last sequence is all it asks for, where listing every key of a bucket a
        thousand nodes follow would cost the server a walk of them all, for each node, at each audit."""
        lost = self.expected > self.highest
        self.expected = last
        return lost

    def _mark(self, key: str, deleted: bool) -> None:
        if deleted:
            self.deleted.add(key)
        else:
            self.deleted.discard(key)


async def live(kv: KeyValue, keys: str, republished: str) -> AsyncGenerator[kvwatch.RawUpdate | None, None]:
    """As kvwatch.watch (every current value matching ``keys``, None once, then every change), the
    changes heard on ``republished``.``keys``, where the bucket's stream republishes them."""
    own = kvwatch.parts(kv)
    js, nc, stream, pre = own.js, own.nc, own.stream, own.pre
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    came_back = connection.reconnected(nc)
    sub = await nc.subscribe(f"{republished}.{keys}", cb=deliver)
    try:
        await nc.flush()  # the server has the subscription before the current values are asked for
        known = Known(whole=keys == ">")
        listed = await kvwatch.listed(js, stream, pre, keys)
        if listed is not None:  # anything the stream stores after this is republished to the subscription
            known.highest = listed[1]
        if listed is None or listed[0]:  # some of the keys are there (or no answer): their values
            async with contextlib.aclosing(kvwatch.watch(kv, keys)) as current:
                async for update in current:
                    if update is None:
                        break
                    known.note(update.key, update.revision, deleted=update.deleted)
                    yield update
        yield None
        if known.whole:
            audit, every = _sequence_audit(known, js, stream), WHOLE_AUDIT_S
        else:
            audit, every = _key_audit(known, lambda: kvwatch.listed(js, stream, pre, keys)), AUDIT_S
        async for update in _follow(queue, known, pre, came_back, audit, every):
            yield update
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        connection.forget(nc, came_back)
        raise_if_cancelling()


Listing = Callable[[], Awaitable[tuple[list[str], int] | None]]  # kvwatch.listed, bound to the watch's keys
Audit = Callable[[], Awaitable[str | None]]  # why the watch may have missed a change, or None


def _key_audit(known: Known, ask: Listing) -> Audit:
    async def audit() -> str | None:
        listed = await ask()
        if listed is not None and known.audit(listed[0]):
            return f"keys written and never heard: {sorted(known.missing)[:5]}"
        return None

    return audit


def _sequence_audit(known: Known, js: Any, stream: str) -> Audit:
    async def audit() -> str | None:
        try:
            info = await js.stream_info(stream)
        except Exception:  # noqa: BLE001 - no answer: the next audit asks again
            return None
        before = known.expected
        if known.audit_sequence(int(info.state.last_seq or 0)):
            return f"the stream stored up to {before} and this watch heard up to {known.highest}"
        return None

    return audit


async def _follow(queue: asyncio.Queue[Msg], known: Known, pre: str, came_back: asyncio.Event,
                  audit: Audit, every: float) -> AsyncGenerator[kvwatch.RawUpdate, None]:
    loop = asyncio.get_running_loop()
    audit_at = loop.time() + every
    while True:
        raise_if_cancelling()
        msg = await next_message(queue, came_back, max(0.0, audit_at - loop.time()))
        if came_back.is_set():
            raise Gap("the connection was lost and regained: changes meanwhile were not heard")
        if msg is None:
            if (why := await audit()) is not None:
                raise Gap(why)
            audit_at = loop.time() + every
            continue
        update = republished_update(msg, pre)
        if update is None:
            continue
        verdict = known.judge(update.key, update.revision, _int(msg.header, _LAST), deleted=update.deleted)
        if verdict is Verdict.GAP:
            raise Gap(f"a change of {update.key!r} before revision {update.revision} was not heard")
        if verdict is Verdict.APPLY:
            yield update


def republished_update(msg: Msg, pre: str) -> kvwatch.RawUpdate | None:
    """A republished message as the watch's update (None: not one, e.g. without the stream's headers)."""
    header = msg.header or {}
    subject = header.get(_SUBJECT, "")
    sequence = _int(header, _SEQUENCE)
    if not subject.startswith(pre) or sequence <= 0:
        return None
    return kvwatch.RawUpdate(key=subject[len(pre):], value=msg.data, revision=sequence,
                             deleted=kvwatch.is_deletion(header), pending=0)


def _int(header: dict[str, str] | None, name: str) -> int:
    try:
        return int((header or {}).get(name, "0"))
    except ValueError:
        return -1


async def next_message(queue: asyncio.Queue[Msg], came_back: asyncio.Event, within: float) -> Msg | None:
    """The next message; None after ``within`` seconds or once the connection came back."""
    if not queue.empty():
        return queue.get_nowait()
    getting = asyncio.ensure_future(queue.get())
    back = asyncio.ensure_future(came_back.wait())
    try:
        await asyncio.wait({getting, back}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (getting, back):
            if not waiting.done():
                waiting.cancel()
    return getting.result() if getting.done() and not getting.cancelled() else None


def republishing(bucket_subjects: str, republished: str) -> RePublish:
    """A KV bucket's stream config part: each stored write of ``bucket_subjects`` (``$KV.<bucket>.``)
    again on ``republished``.<key>, headers and value."""
    return RePublish(src=f"{bucket_subjects}>", dest=f"{republished}.>")


async def ensure_republishing(js: JetStreamContext, info: StreamInfo, wanted: RePublish) -> StreamInfo:
    """A stream made before it republished (an older virtbus) is given it as the control plane opens
    it: until then its nodes' watches hear nothing after their current values."""
    have = info.config.republish
    if have is not None and (have.src, have.dest) == (wanted.src, wanted.dest):
        return info
    try:
        updated = await js.update_stream(info.config, republish=wanted)
    except nats.js.errors.ServerError as exc:
        if exc.err_code != _REPUBLISH_FIXED:
            raise
        # nats-server 2.9 keeps a stream's RePublish as it was made: its followers watch it through a
        # consumer (servicekit.store.republishes) until the stream is made again
        log.warning("stream cannot be given its republish on this nats-server; followed by consumers",
                    stream=info.config.name, error=exc.description)
        return info
    log.info("stream republishes its writes", stream=info.config.name, dest=wanted.dest)
    return updated
