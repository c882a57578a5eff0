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

_HTTP_LIKE = {
    Code.BAD_REQUEST: "400", Code.INVALID: "422", Code.NOT_FOUND: "404", Code.ALREADY_EXISTS: "409",
    Code.CONFLICT: "409", Code.UNAVAILABLE: "503", Code.INTERNAL: "500",
}
# Below NATS's default max payload (1 MiB), and room for a manifest with its largest cloud-init
# (2 x 64 KiB): a bigger request is an error reply, never parsed.
MAX_REQUEST = 512 * 1024
_encoder = msgspec.json.Encoder()
log = structlog.get_logger()


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    handler: Handler


async def serve(nc: Client, *, name: str, version: str, description: str, queue: str,
                endpoints: list[Endpoint], max_request: int = MAX_REQUEST) -> Service:
    service = await add_service(nc, ServiceConfig(
        name=name, version=version, description=description, queue_group=queue))
    for ep in endpoints:
        await service.add_endpoint(EndpointConfig(name=ep.name, subject=ep.subject, handler=_wrap(ep, max_request)))
    return service


def _wrap(ep: Endpoint, max_request: int) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        try:
            if len(request.data) > max_request:  # refused before anything parses it
                raise ApiError(Code.BAD_REQUEST, f"a request is at most {max_request // 1024} KiB; this one is "
                               f"{len(request.data) // 1024} KiB")
            result = await ep.handler(request.data)
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
