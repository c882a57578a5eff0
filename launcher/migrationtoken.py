"""A migration's token between its two launchers (proto.migrationtoken), over core NATS: the target
answers on its node's subject, the source asks from its node's inbox. Nothing is written anywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from proto import subjects
from proto.api import decode_reply, decode_request, encode
from proto.errors import ApiError, Code, ErrorReply
from proto.migrationtoken import TokenGrant, TokenRequest, check_grant, refusal

log = structlog.get_logger()
ASK_S = 5.0  # one request's wait
ASKS = 6  # the target's launcher subscribes before it says it is ready: a miss is a hiccup of the bus


class TokenDesk:
    """The target's side: answers the source node's request with the token, anyone else's with why not."""

    def __init__(self, nc: Client, *, node: str, vmi: str, migration_uid: str, token: str,
                 source_node: Callable[[], str | None], certificate: str = "") -> None:
        self.nc, self.node, self.vmi, self.migration_uid, self.token = nc, node, vmi, migration_uid, token
        self.certificate = certificate  # the target's TLS certificate (launcher.migrationtls), given with it
        self.source_node = source_node  # as the instance's record says, heard last
        self.refused = 0
        self._sub: Subscription | None = None

    async def open(self) -> None:
        self._sub = await self.nc.subscribe(subjects.migration_token(self.node, self.migration_uid), cb=self._answer)
        await self.nc.flush()  # subscribed on the server before the source can hear it is ready

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
            with contextlib.suppress(Exception):  # gone from the server before anyone asks again: told no one answers
                await self.nc.flush(timeout=2)

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            request = decode_request(msg.data, TokenRequest)
            why = refusal(request, vmi=self.vmi, migration_uid=self.migration_uid, source_node=self.source_node(),
                          reply=msg.reply)
            if why is not None:
                raise why
            body = encode(TokenGrant(token=self.token, certificate=self.certificate))
        except ApiError as exc:
            self.refused += 1
            log.warning("migration token refused", reason=exc.message, reply=msg.reply[:64])
            body = encode(ErrorReply(error=exc.body()))
        try:
            await msg.respond(body)
        except Exception as exc:  # noqa: BLE001 - the asker went away: nothing to tell it
            log.info("migration token answer not sent", error=str(exc) or type(exc).__name__)


async def ask(nc: Client, *, target_node: str, vmi: str, migration_uid: str, tls: bool = True,
              asks: int = ASKS) -> TokenGrant:
    """The source's side: the target's token (and its certificate when the migration is over TLS).
    Raises ApiError when the target does not give them."""
    subject = subjects.migration_token(target_node, migration_uid)
    body = encode(TokenRequest(vmi=vmi, migration_uid=migration_uid))
    for attempt in range(asks):
        try:
            msg = await nc.request(subject, body, timeout=ASK_S)
        except (TimeoutError, NatsTimeout, NoRespondersError):
            if attempt + 1 < asks:
                await asyncio.sleep(min(0.1 * 2 ** attempt, 1.0))
            continue
        try:
            grant = decode_reply(msg.data, TokenGrant)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # an answer, but not a grant
            raise ApiError(Code.INVALID, f"the target's answer is not a grant: {exc}") from None
        check_grant(grant, tls)
        return grant
    raise ApiError(Code.UNAVAILABLE, f"the target's launcher on node {target_node} did not give its token")
