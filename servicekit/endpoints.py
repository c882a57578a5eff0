"""Request/reply endpoints as a NATS micro service (``$SRV.PING|INFO|STATS`` for free).

A handler takes the request body and returns a msgspec Struct. Expected failures are ApiError and
become ``{"error": {...}}``; anything else is logged here and answered as Internal, never as a repr.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import structlog
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from proto.errors import ApiError, Code, ErrorReply

Handler = Callable[[bytes], Awaitable[msgspec.Struct]]
# For wildcard subjects whose tokens say who asks (virtbus.nodeapi.<node>.<verb>): (subject, body).
SubjectHandler = Callable[[str, bytes], Awaitable[msgspec.Struct]]

_HTTP_LIKE = {
    Code.BAD_REQUEST: "400", Code.INVALID: "422", Code.NOT_FOUND: "404", Code.ALREADY_EXISTS: "409",
    Code.CONFLICT: "409", Code.FORBIDDEN: "403", Code.UNAVAILABLE: "503", Code.INTERNAL: "500",
}
_encoder = msgspec.json.Encoder()
log = structlog.get_logger()


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    handler: Handler | None = None
    subject_handler: SubjectHandler | None = None

    async def call(self, subject: str, body: bytes) -> msgspec.Struct:
        if self.subject_handler is not None:
            return await self.subject_handler(subject, body)
        assert self.handler is not None
        return await self.handler(body)


async def serve(nc: Client, *, name: str, version: str, description: str, queue: str,
                endpoints: list[Endpoint]) -> Service:
    service = await add_service(nc, ServiceConfig(
        name=name, version=version, description=description, queue_group=queue))
    for ep in endpoints:
        await service.add_endpoint(EndpointConfig(name=ep.name, subject=ep.subject, handler=_wrap(ep)))
    return service


def _wrap(ep: Endpoint) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        try:
            result = await ep.call(request.subject, request.data)
        except ApiError as exc:
            await _respond_error(request, exc)
            return
        except Exception:
            log.exception("request failed", endpoint=ep.name)
            await _respond_error(request, ApiError(Code.INTERNAL, "internal error; the service logged it"))
            return
        await request.respond(_encoder.encode(result))

    return handle


async def _respond_error(request: Request, exc: ApiError) -> None:
    body = _encoder.encode(ErrorReply(error=exc.body()))
    await request.respond(body, headers={
        "Nats-Service-Error": exc.message[:200], "Nats-Service-Error-Code": _HTTP_LIKE[exc.code]})
