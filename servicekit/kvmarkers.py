"""How long a deleted key's marker stays in its bucket, and the sweep that gives that limit to markers
written before there was one.

Why: a delete leaves one marker (a purge that rolls up the key's revisions: servicekit.store's
``Bucket.delete``) so that watchers hear the key go. Markers stayed for good, ~100-150 bytes each,
and every bucket has a byte limit past which nats-server refuses new writes (DiscardNew): ``vmis``
held about two million deletions and then took no write at all. nats-server 2.11 and later remove a
message whose ``Nats-TTL`` has passed, on a stream that allows it (nats-py makes KV streams so); a
marker now carries MARKER_TTL_S.

What a marker's going changes for watchers: a watch that heard the deletion has it; one that starts
after the marker went does not hear of the key at all, as if it had never been. A watch away longer
than the marker stays would miss the deletion, and none relies on it: an informer mends its cache
from the current values whenever its watch starts over (servicekit.informer), the leader starts each
term from fresh caches (scheduler.controllers), and a node's live watch takes a key's first message
after its marker went (Nats-Last-Sequence 0) for what it is (servicekit.kvlive). etcd keeps
Kubernetes' history for 5 minutes (the API server's compaction); an hour is more than any of these
needs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.api import StreamInfo
from nats.js.kv import KV_OP, KV_PURGE, MSG_ROLLUP_SUBJECT, KeyValue

from servicekit import kvwatch

log = structlog.get_logger()
MARKER_TTL_S = 3600
TTL_HEADER = kvwatch.TTL_HEADER
TTL_DISABLED = 10166  # nats-server: "per-message TTL is disabled" on this stream
WRONG_LAST = (10071, 10164)  # nats-server: the key's last revision is not the one expected


def deletion_headers(revision: int | None, ttl: int | None) -> dict[str, str]:
    """A deletion's headers: a purge marker that rolls up the key's revisions, a compare-and-delete on
    ``revision`` when given, gone after ``ttl`` seconds when given."""
    headers = {KV_OP: KV_PURGE, api.Header.ROLLUP: MSG_ROLLUP_SUBJECT}
    if revision:
        headers[api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(revision)
    if ttl:
        headers[TTL_HEADER] = str(ttl)
    return headers


def server_expires(nc: Any) -> bool:
    """Whether the connected nats-server removes messages past their TTL (2.11 and later)."""
    version = nc.connected_server_version
    try:
        return (version.major, version.minor) >= (2, 11)
    except (TypeError, ValueError):  # "0.0.0-unknown" parses; anything else is taken for old
        return False


async def allow_ttl(js: JetStreamContext, info: StreamInfo) -> StreamInfo:
    """A bucket's stream made without AllowMsgTTL (an older nats-py, or a server before 2.11, which
    ignored it) is given it as the control plane opens it, on a server that has it: until then its
    markers stay for good (Bucket.delete falls back to markers without a TTL)."""
    if info.config.allow_msg_ttl:
        return info
    updated = await js.update_stream(info.config, allow_msg_ttl=True)
    log.info("stream lets its deletions' markers expire", stream=info.config.name)
    return updated


async def sweep(kv: KeyValue, ttl: int = MARKER_TTL_S) -> int:
    """Gives each marker without a TTL (written before markers had one) a TTL, by a purge in its
    place, compare-and-set on the marker so that a key written again meanwhile is left as it is; the
    purge also rolls up the revisions a plain delete left behind. Returns how many were given one."""
    js: Any = kv._js  # noqa: SLF001 - nats-py keeps these private; the KeyValue has no accessor
    pre: str = kv._pre  # noqa: SLF001
    legacy: list[kvwatch.RawUpdate] = []
    async with contextlib.aclosing(kvwatch.watch(kv)) as current:
        async for update in current:
            if update is None:
                break
            if update.deleted and not update.expires:
                legacy.append(update)
    swept = 0
    for marker in legacy:
        try:
            await js.publish(f"{pre}{marker.key}", headers=deletion_headers(marker.revision, ttl))
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST:
                continue  # written again meanwhile: that value stays
            raise
        swept += 1
    if swept:
        log.info("deletions' markers given a time to live", bucket=kv._name, markers=swept)  # noqa: SLF001
    return swept
