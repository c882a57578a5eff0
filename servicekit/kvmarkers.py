"""A deleted key's marker, and the leader's sweep that takes deleted keys out of their bucket once
every watch has long had their going.

A delete leaves a marker (KV-Operation DEL, nats-py's ``delete``) so that watchers hear the key go; the key's older
revisions stay with it (a bucket keeps 5 per key). Every bucket has a byte limit past which
nats-server refuses new writes (DiscardNew), so with churn (VMIs created and deleted for ever) a
bucket filled up with the revisions of keys long gone and then took no write at all.

Why not a purge at delete time (a rollup, which leaves only the marker): nats-server moves each
consumer whose filter is wider than the purged key (a watch of the whole bucket) up to the key's
first remaining message, the marker just written, and a write of another key not yet delivered to
that consumer is skipped for good. On 2.15 a watch started on an empty bucket missed the key
written together with the first deletion, in 4 runs of 5; on Debian's 2.9.10 (before nats-server #3838
and #5075) most of them (tests/integration/test_watch_through_deletions.py). The leader's watch of
every VMI missed a replica set's new instance, written as the failed one was deleted, and it was
never bound.

So a key deleted is taken out later, whole (the marker and its revisions, none kept): a purge that
leaves nothing of the key moves no consumer (the key has no first message left), and by then every
watch had the marker long ago. The leader sweeps every SWEEP_S the keys whose marker was already
there at its sweep before (``sweep``): a marker stays one to two periods. A watch that starts after
the key went does not hear of it at all, as if it had never been; one that was away meanwhile mends
its cache from the current values when it starts again (servicekit.informer; the leader starts each
term from fresh caches; a node's live watch takes the key's next message, with no previous one, as
new: servicekit.kvlive). etcd keeps Kubernetes' history for 5 minutes.

Before 2.10.11 (Debian 12's 2.9.10) a purge that leaves nothing of its key moves every watch of a
wider filter to the stream's end, past whatever it had still to deliver. There the sweep ``trim``s
instead: it takes out a deleted key's older revisions and keeps its marker (the purge stops at it).
The key's first message left is then the marker, which every watch passed long ago, and a watch is
moved only when it is behind that message: none is. A marker is 83 bytes (a key of 12 characters)
where each revision of a VMI is its whole record (1-3 KB), so a bucket of 256 MiB takes some three
million deletions instead of some tens of thousands; the markers themselves stay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from servicekit import kvwatch

log = structlog.get_logger()
SWEEP_S = 1800.0


def server_purges_safely(nc: Any) -> bool:
    """Whether purging one key leaves the watches of wider filters where they are: nats-server 2.10.11
    and later (#5075). Debian 12's 2.9.10 moved every consumer of the stream to its end."""
    version = nc.connected_server_version
    try:
        return (version.major, version.minor, version.patch) >= (2, 10, 11)
    except (TypeError, ValueError):  # "0.0.0-unknown" parses; anything else is taken for old
        return False


def gone_before(deleted: list[tuple[str, int]], before: int, after: int = 0) -> list[tuple[str, int]]:
    """Of the keys whose last message is their deletion's marker (key, marker's sequence), those
    whose marker the stream had at sequence ``before`` and not yet at ``after`` (pure)."""
    return [(key, seq) for key, seq in deleted if after < seq <= before]


async def deleted_keys(kv: KeyValue) -> list[tuple[str, int]]:
    """Every key whose last message is its deletion's marker, with that marker's sequence."""
    found: list[tuple[str, int]] = []
    async with contextlib.aclosing(kvwatch.watch(kv)) as current:
        async for update in current:
            if update is None:
                break
            if update.deleted:
                found.append((update.key, update.revision))
    return found


async def sweep(kv: KeyValue, before: int) -> int:
    """Takes out whole each deleted key whose marker the stream had at sequence ``before``; returns
    how many. Each purge stops at its marker (a key written again meanwhile keeps its new value), and
    a key written again since it was listed is passed over: its purge would leave that first message,
    and move the watches of the whole bucket up to it."""
    own = kvwatch.parts(kv)
    js, stream, pre = own.js, own.stream, own.pre
    swept = 0
    for key, marker in gone_before(await deleted_keys(kv), before):
        try:
            last = await js.get_last_msg(stream, f"{pre}{key}")
        except nats.js.errors.NotFoundError:
            continue  # taken out meanwhile (another leader's sweep)
        if last.seq != marker:
            continue  # written again since
        await js.purge_stream(stream, subject=f"{pre}{key}", seq=marker + 1)
        swept += 1
    if swept:
        log.info("deleted keys taken out", bucket=own.bucket, keys=swept)
    return swept


async def trim(kv: KeyValue, before: int, after: int = 0) -> int:
    """Where a purge that leaves nothing would move other watches (not ``server_purges_safely``):
    takes out the older revisions of each deleted key whose marker the stream had at sequence
    ``before`` and not at ``after`` (the ``before`` of the last trim done: those were trimmed then),
    keeping the marker; returns how many keys. A key written again meanwhile keeps its marker and its
    new value: the purge stops at the marker either way, so no check is needed first."""
    own = kvwatch.parts(kv)
    js, stream, pre = own.js, own.stream, own.pre
    trimmed = 0
    for key, marker in gone_before(await deleted_keys(kv), before, after):
        await js.purge_stream(stream, subject=f"{pre}{key}", seq=marker)
        trimmed += 1
    if trimmed:
        log.info("deleted keys' revisions taken out, markers kept", bucket=own.bucket, keys=trimmed)
    return trimmed


async def keep_swept(buckets: Mapping[str, KeyValue], *, every_s: float, whole: bool) -> None:
    """Every ``every_s`` until cancelled (the leader's, while it leads): in each bucket the keys
    whose marker was there at the sweep before are taken out whole (``sweep``), or where the server's
    purges would move other watches (not ``whole``) their older revisions are (``trim``)."""
    if not whole:
        log.info("deleted keys' markers kept: this nats-server's purges move other watches")
    marks: dict[str, int] = {}  # bucket -> its stream's last sequence at the sweep before
    trimmed: dict[str, int] = {}  # bucket -> the mark its last trim went up to
    while True:
        await asyncio.sleep(every_s)
        for name, kv in buckets.items():
            try:
                own = kvwatch.parts(kv)
                info = await own.js.stream_info(own.stream)
                if name in marks and whole:
                    await sweep(kv, marks[name])
                elif name in marks:
                    await trim(kv, marks[name], trimmed.get(name, 0))
                    trimmed[name] = marks[name]
                marks[name] = int(info.state.last_seq or 0)
            except Exception as exc:  # noqa: BLE001 - logged; the next sweep tries again
                log.warning("deleted keys not swept", bucket=name, error=str(exc) or type(exc).__name__)
