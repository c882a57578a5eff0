"""JetStream publishes, each acknowledged through one reply subscription per connection.

nats-py's ``JetStreamContext.publish`` makes every write a request of its own: a fresh random
token, an ``asyncio.wait_for`` with a timer of its own, the ack parsed by ``json`` into a
dataclass. The binder writes thousands a second, and py-spy put those costs at a fifth of the
scheduler's CPU. ``JetStream`` keeps nats-py's API and errors (its KV buckets and object stores
publish through it unchanged) and answers a publish with one subscription for all acks, a counter
for tokens, msgspec for the ack and one sleeper for every timeout. A publish no stream answered is tried
twice more, as nats.go's is (RETRIES).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

_NO_RESPONDERS = "503"  # the server's status when no stream takes the subject

# A publish no stream answered is tried again, as nats.go's does (ADR-22: 2 more tries, 250 ms apart).
# On a cluster, a stream takes its subject only where its leader is: for a moment after the stream is
# made or its leader changes, the server the client is on has not yet heard of that interest. The
# message was stored nowhere, so trying again cannot store it twice.
RETRY_WAIT_S = 0.25
RETRIES = 2


class _AckError(msgspec.Struct):
    code: int
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: _AckError | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class JetStream(JetStreamContext):
    """``nc.jetstream()`` with a cheaper ``publish``; everything else is nats-py's."""

    def __init__(self, nc: Client, timeout: float = 5.0) -> None:
        super().__init__(nc, timeout=timeout)
        self._acks: dict[str, asyncio.Future[api.PubAck]] = {}
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._tokens = itertools.count()
        self._reply_prefix = ""  # set once the reply subscription is made
        self._opening = asyncio.Lock()
        self._sleeper: asyncio.Task[None] | None = None

    async def publish(self, subject: str, payload: bytes = b"",
                      timeout: float | None = None,  # noqa: ASYNC109 - nats-py's signature, kept
                      stream: str | None = None, headers: dict[str, Any] | None = None,
                      msg_ttl: float | None = None) -> api.PubAck:
        if msg_ttl is not None or (timeout is not None and timeout != self._timeout):
            # rare (nothing of ours asks either); each deadline must not precede the one before it
            return await super().publish(subject, payload, timeout, stream, headers, msg_ttl)
        if stream is not None:
            headers = {**(headers or {}), api.Header.EXPECTED_STREAM: stream}
        for _ in range(RETRIES):
            try:
                return await self._publish(subject, payload, headers)
            except nats.js.errors.NoStreamResponseError:
                await asyncio.sleep(RETRY_WAIT_S)
        return await self._publish(subject, payload, headers)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, Any] | None) -> api.PubAck:
        if not self._reply_prefix:
            await self._open()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[api.PubAck] = loop.create_future()
        self._acks[token] = ack
        try:
            await self._nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
        except BaseException:
            del self._acks[token]
            raise
        self._deadlines.append((loop.time() + self._timeout, token))
        if self._sleeper is None or self._sleeper.done():
            self._sleeper = asyncio.create_task(self._expire(), name="jetstream publish timeouts")
        return await ack

    async def _open(self) -> None:
        async with self._opening:
            if not self._reply_prefix:
                prefix = self._nc.new_inbox() + "."  # under the user's own inbox prefix (permissions)
                await self._nc.subscribe(prefix + "*", cb=self._on_ack)  # drained with the connection
                self._reply_prefix = prefix

    async def _on_ack(self, msg: Msg) -> None:
        ack = self._acks.pop(msg.subject[len(self._reply_prefix):], None)
        if ack is None or ack.done():
            return  # timed out already, or its publisher was cancelled
        if msg.headers and msg.headers.get(api.Header.STATUS) == _NO_RESPONDERS:
            ack.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = _decode_ack(msg.data)
            if reply.error is not None:  # raises the kind nats-py would (ServiceUnavailableError, ...)
                nats.js.errors.APIError.from_error(msgspec.structs.asdict(reply.error))
        except (msgspec.DecodeError, nats.js.errors.APIError) as exc:
            ack.set_exception(exc)
            return
        ack.set_result(api.PubAck(stream=reply.stream, seq=reply.seq, domain=reply.domain,
                                  duplicate=reply.duplicate))

    async def _expire(self) -> None:
        """Fails each publish not acknowledged in time with nats-py's TimeoutError. Deadlines come in
        the order they fall (one timeout for all), so only the oldest is ever looked at."""
        loop = asyncio.get_running_loop()
        while self._deadlines:
            deadline, token = self._deadlines[0]
            ack = self._acks.get(token)
            if ack is None or ack.done():
                self._deadlines.popleft()
                self._acks.pop(token, None)
                continue
            if deadline > loop.time():
                await asyncio.sleep(deadline - loop.time())
                continue
            self._deadlines.popleft()
            del self._acks[token]
            ack.set_exception(nats.errors.TimeoutError())

    async def close(self) -> None:
        """Fails what still waits for its ack (the connection is going) and stops the sleeper."""
        if self._sleeper is not None:
            self._sleeper.cancel()
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(nats.errors.ConnectionClosedError())
        self._acks.clear()
        self._deadlines.clear()
