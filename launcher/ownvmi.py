"""A launcher's watch of its own VMI, with nothing kept for it on the server: the changes are heard
as the node's shard republishes the leader's copy (proto.nodevmis: the VMI and the ``vmis`` revision
it copies), over a plain subscription, and read from ``vmis`` itself whenever one may have been
missed.

Why not a watch of its ``vmis`` key, as before: that is a JetStream consumer per launcher, kept as
long as its VM runs. At 10,000 VMIs (issue 12's scale) those consumers held 594 MiB of nats-server's
memory (107 MiB without them), woke it for 2,000 idle heartbeats a second (7.7 % of a core), and
cost it 1.62 ms of CPU each to make, where a subscription and a read cost 0.10 ms (a burst of
launches is a burst of them; bench/launcher_watches.py). The node's handler already hears the same
copies this way (servicekit.kvlive); the launcher now follows the one key that is its own.

Which value is news is decided by the ``vmis`` revision each carries (``Latest``, pure): a copy
trails its VMI by the leader's copying, and one older than what the launcher read from ``vmis`` is
passed over, so it never goes back to an older value than it had. ``vmis`` is read (a direct get, no
consumer) right after subscribing (the current value, and what changed before the subscription),
after a reconnect (what was said while it was down), every RESYNC_S (a message lost between
clustered servers), and when a copy goes or cannot be read (``vmis`` says whether the VMI went).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg

from proto import subjects
from proto.errors import ApiError
from proto.state import VMI
from proto.stored import BadStoredValue
from servicekit import connection, kvlive
from servicekit.cancelling import raise_if_cancelling
from servicekit.store import Entry, Store

log = structlog.get_logger()
# A message lost between clustered servers while no connection dropped is rare, and a lost one that
# is not its VMI's last is made good by the next (each carries the whole VMI): read vmis every five
# minutes, as KubeVirt's informers resync. Once a minute, 10,000 launchers' reads took 1.1 % of
# nats-server's core (bench/launcher_watches.py --idle 70) and 13 KiB more per node per minute
# (bench/hollow_nodes.py's steady state: 16.7 KiB against 3.2).
RESYNC_S = 300.0
RETRY_S = 1.0  # a read of vmis the bus did not answer, again after this (or once it is back)


@dataclass
class Latest:
    """The ``vmis`` revision of the newest value handed on (pure)."""

    revision: int

    def news(self, revision: int) -> bool:
        """Whether a value at ``revision`` is newer than the last handed on (then it is the last)."""
        if revision <= self.revision:
            return False
        self.revision = revision
        return True


@dataclass(frozen=True)
class Gone:
    """The VMI is no longer in ``vmis`` (deleted)."""


async def changes(store: Store, node: str, vmi: str, *, republished: bool = True) -> AsyncGenerator[VMI | Gone, None]:
    """The current value of ``vmi`` (as a watch gives it first), then each newer one, or Gone once
    it is deleted; forever, until the caller stops iterating. ``republished``: the node's shard
    republishes its copies; if not (a shard an older virtbus made, on nats-server 2.9, which will not
    add a republish), through a watch of ``vmis`` itself, a consumer, as launchers followed it before."""
    if not republished:
        entry = await _read(store, vmi, asyncio.Event())  # a watch of a key not there says nothing until it comes
        yield Gone() if entry is None else entry.value
        seen = Latest(0 if entry is None else entry.revision)
        async for change in store.vmis.watch(vmi):
            if seen.news(change.revision):
                yield Gone() if change.value is None else change.value
        return
    latest = Latest(0)
    bucket = subjects.node_vmis_bucket(node)
    copies = store.node_vmis(node)
    key = subjects.node_vmi(node, vmi)
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    nc = store.nc
    came_back = connection.reconnected(nc)
    sub = await nc.subscribe(f"{subjects.node_vmis_republished(bucket)}.{key}", cb=deliver)
    try:
        await nc.flush()  # subscribed before the first read: nothing written after it goes unheard
        resync = True
        while True:
            raise_if_cancelling()
            if resync:
                entry = await _read(store, vmi, came_back)
                if entry is None:
                    yield Gone()
                elif latest.news(entry.revision):
                    yield entry.value
            msg = await kvlive.next_message(queue, came_back, RESYNC_S)
            resync = msg is None or came_back.is_set()
            if msg is None:
                continue
            update = kvlive.republished_update(msg, subjects.kv_subject(bucket))
            if update is None or update.key != key:
                continue
            if update.deleted or not update.value:
                resync = True  # the copy went: vmis says whether the VMI did
                continue
            try:
                copy = copies.decode(key, update.value)
            except BadStoredValue as bad:  # written by hand on the bus, say: vmis is the truth
                log.warning("copy of this VMI unreadable; reading the VMI itself", error=str(bad))
                resync = True
                continue
            if latest.news(copy.revision):  # decode checked the copy is this VMI's, filed under its key
                yield copy.vmi
    finally:
        connection.forget(nc, came_back)
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection may be closing; the subscription goes with it
            log.debug("subscription to this VMI's copy not ended", exc_info=True)


async def _read(store: Store, vmi: str, came_back: asyncio.Event) -> Entry[VMI] | None:
    """``vmi`` as ``vmis`` has it now, read until the bus answers. ``came_back`` is set when the
    connection is regained (a read made before then may have missed what was said meanwhile): it is
    cleared before each read."""
    while True:
        raise_if_cancelling()
        came_back.clear()
        try:
            return await store.vmis.get(vmi)
        except ApiError as exc:
            if not exc.retryable:
                raise
            # the bus away (a reconnect is under way, or the server is busy): again once it is
            # back, or in a moment; what the launcher runs goes on meanwhile
            log.info("own VMI not read; reading it again", error=exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(came_back.wait(), RETRY_S)
