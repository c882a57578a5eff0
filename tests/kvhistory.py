"""A KV key's every revision, read one stored message at a time.

nats-py's ``KeyValue.history`` watches the key and trusts the consumer's pending count to know when
it has seen everything; when the messages are already on their way as it asks, the count is 0, it
stops at once and raises NoKeysError for a key that has revisions (a CI failure of
test_bind_race). Asking the stream for the next message of the key's subject, sequence after
sequence, has no such race.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext

from proto import subjects


@dataclass(frozen=True)
class Revision:
    revision: int
    value: bytes  # empty for a deletion

    def json(self) -> Any:
        return json.loads(self.value)


async def key_history(js: JetStreamContext, bucket: str, key: str) -> list[Revision]:
    subject, stream = subjects.kv_subject(bucket, key), subjects.kv_stream(bucket)
    revisions: list[Revision] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return revisions
        assert msg.seq is not None, "a stored message always has its sequence"
        revisions.append(Revision(revision=msg.seq, value=msg.data or b""))
        seq = msg.seq + 1


async def revisions_of(js: JetStreamContext, bucket: str, key: str) -> int:
    """How many messages the bucket's stream holds of the key: its revisions and its marker."""
    return len(await key_history(js, bucket, key))


async def last_sequence(js: JetStreamContext, bucket: str) -> int:
    """The bucket's stream's last sequence: a sweep's mark."""
    return int((await js.stream_info(subjects.kv_stream(bucket))).state.last_seq or 0)
