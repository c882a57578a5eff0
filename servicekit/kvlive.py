"""A KV watch of a few keys that follows them as their stream republishes what it stores (JetStream's
RePublish), over a plain subscription, once a consumer has given their current values.

Why: a node's watch of its own VMI copies was a consumer filtered to ``<node>.*`` on its shard, and
nats-server 2.15 finds each such consumer's next match by reading every message written to the shard
since its last (``msgBlock.firstMatching``): 18-31 % of nats-server's CPU binding 10,000 VMIs on
1,000 hollow nodes (docs/benchmarks.md). A republished message reaches the node's subscription by the
server's subject routing, as any message does; the stream republishes it only once it is stored.

What a plain subscription does not promise, and what is done about it (each ends the watch with
``Gap``; the informer starts it again and mends its cache from the new current values):
- messages lost while the connection was down: a reconnect ends the watch;
- a message lost on the way (a route between clustered servers cut): each republished message names
  the sequence of its key's message before it (Nats-Last-Sequence); one that does not follow the last
  this watch had of that key ends the watch; and every AUDIT_S the keys the stream has are compared
  with those the watch knows, for a key whose only message was lost (still missing at the next audit:
  one just written may not have come yet).
The current values come from a consumer of each key's last message (servicekit.kvwatch), made after
the subscription: what was written in between comes twice, and the later copy is passed over by its
sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RePublish, StreamInfo
from nats.js.kv import KeyValue

from servicekit import connection, kvwatch
from servicekit.cancelling import raise_if_cancelling

log = structlog.get_logger()
AUDIT_S = 60.0
_SEQUENCE = "Nats-Sequence"
_LAST = "Nats-Last-Sequence"
_SUBJECT = "Nats-Subject"


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

    def note(self, key: str, revision: int, *, deleted: bool = False) -> None:
        if revision > self.revisions.get(key, 0):
            self.revisions[key] = revision
            self._mark(key, deleted)

    def judge(self, key: str, sequence: int, last: int, *, deleted: bool = False) -> Verdict:
        """A republished message of ``key`` at ``sequence``, its key's message before it at ``last``
        (0: none). After a deletion, 0 is what follows once the sweep took the key out (servicekit.kvmarkers)."""
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
        known = Known()
        listed = await kvwatch.listed(js, stream, pre, keys)
        if listed is None or listed[0]:  # some of the keys are there (or no answer): their values
            async with contextlib.aclosing(kvwatch.watch(kv, keys)) as current:
                async for update in current:
                    if update is None:
                        break
                    known.note(update.key, update.revision, deleted=update.deleted)
                    yield update
        yield None
        async for update in _follow(queue, known, pre, came_back, lambda: kvwatch.listed(js, stream, pre, keys)):
            yield update
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        connection.forget(nc, came_back)
        raise_if_cancelling()


Listing = Callable[[], Awaitable[tuple[list[str], int] | None]]  # kvwatch.listed, bound to the watch's keys


async def _follow(queue: asyncio.Queue[Msg], known: Known, pre: str, came_back: asyncio.Event,
                  ask: Listing) -> AsyncGenerator[kvwatch.RawUpdate, None]:
    loop = asyncio.get_running_loop()
    audit_at = loop.time() + AUDIT_S
    while True:
        raise_if_cancelling()
        msg = await next_message(queue, came_back, max(0.0, audit_at - loop.time()))
        if came_back.is_set():
            raise Gap("the connection was lost and regained: changes meanwhile were not heard")
        if msg is None:
            listed = await ask()
            if listed is not None and known.audit(listed[0]):
                raise Gap(f"keys written and never heard: {sorted(known.missing)[:5]}")
            audit_at = loop.time() + AUDIT_S
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
    updated = await js.update_stream(info.config, republish=wanted)
    log.info("stream republishes its writes", stream=info.config.name, dest=wanted.dest)
    return updated
