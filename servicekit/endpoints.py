"""Request/reply endpoints as a NATS micro service (``$SRV.PING|INFO|STATS`` for free).

A handler takes the request body and returns a msgspec Struct. Expected failures are ApiError and
become ``{"error": {...}}``; NATS not answering the handler (servicekit.natsfaults) is Unavailable,
retryable; anything else is logged here and answered as Internal, never as a repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import structlog
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from proto.errors import ApiError, Code, ErrorReply
from servicekit import natsfaults
from servicekit.fairqueue import Admission, FairQueue, flow_of

Handler = Callable[[bytes], Awaitable[msgspec.Struct]]
# For wildcard subjects whose tokens say who asks (virtbus.nodeapi.<node>.<verb>): (subject, body).
SubjectHandler = Callable[[str, bytes], Awaitable[msgspec.Struct]]

_HTTP_LIKE = {
    Code.BAD_REQUEST: "400", Code.INVALID: "422", Code.NOT_FOUND: "404", Code.ALREADY_EXISTS: "409",
    Code.CONFLICT: "409", Code.FORBIDDEN: "403", Code.UNAVAILABLE: "503", Code.INTERNAL: "500",
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
    handler: Handler | None = None
    subject_handler: SubjectHandler | None = None

    async def call(self, subject: str, body: bytes) -> msgspec.Struct:
        if self.subject_handler is not None:
            return await self.subject_handler(subject, body)
        assert self.handler is not None
        return await self.handler(body)


# nats-py hands a subscription's messages to its callback one at a time, so a flood of slow
# requests would queue behind each other until every caller timed out. Instead each request runs in
# its own task, RUNNING at once; up to WAITING more wait their turn, each client in a queue of its
# own served in turn (servicekit.fairqueue), and beyond that the service answers at once that it is
# busy (Unavailable, retryable), as Kubernetes' API server answers 429. A service whose callers give
# up after a known time (``max_wait``) also answers busy to a request that waited longer than that in
# the queue, instead of doing work whose answer nobody would wait for: its caller asks again anyway.
RUNNING, WAITING = 64, 512
BUSY = ApiError(Code.UNAVAILABLE, "the service is busy; try again")
Work = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class _Queued:
    run: Work
    refuse: Work  # the quick "busy" answer
    since: float  # when it came, on the limiter's clock


class _Limiter:
    def __init__(self, running: int, waiting: int, max_wait: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue: FairQueue[_Queued] = FairQueue(running, waiting)
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_wait = max_wait
        self.clock = clock

    def start(self, client: str, run: Work, refuse: Work) -> bool:
        item = _Queued(run, refuse, self.clock())
        admission = self.queue.admit(client, item)
        if admission is Admission.RUN:
            self._spawn(item)
        return admission is not Admission.REFUSED

    def _spawn(self, item: _Queued) -> None:
        task = asyncio.ensure_future(self._run(item))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, item: _Queued) -> None:
        stopping = False
        try:
            if self.max_wait is not None and self.clock() - item.since > self.max_wait:
                await item.refuse()
            else:
                await item.run()
        except asyncio.CancelledError:
            stopping = True  # the service is going: nothing more is started
            raise
        finally:
            following = self.queue.done()
            if following is not None and not stopping:
                self._spawn(following)


async def serve(nc: Client, *, name: str, version: str, description: str, queue: str,
                endpoints: list[Endpoint], running: int = RUNNING, waiting: int = WAITING,
                max_wait: float | None = None, max_request: int = MAX_REQUEST) -> Service:
    """max_wait: the longest a request may wait for its turn and still be worked on (None: any)."""
    service = await add_service(nc, ServiceConfig(
        name=name, version=version, description=description, queue_group=queue))
    limiter = _Limiter(running, waiting, max_wait)
    for ep in endpoints:
        await service.add_endpoint(EndpointConfig(name=ep.name, subject=ep.subject,
                                                  handler=_wrap(ep, limiter, max_request)))
    return service


def _wrap(ep: Endpoint, limiter: _Limiter, max_request: int) -> Callable[[Request], Awaitable[None]]:
    async def dispatch(request: Request) -> None:
        # the reply subject says which client asks (nats-py keeps the message private to Request)
        if not limiter.start(flow_of(request._msg.reply or ""), lambda: handle(request),
                             lambda: _respond_error(request, BUSY)):
            await _respond_error(request, BUSY)

    async def handle(request: Request) -> None:
        try:
            if len(request.data) > max_request:  # refused before anything parses it
                raise ApiError(Code.BAD_REQUEST, f"a request is at most {max_request // 1024} KiB; this one is "
                               f"{len(request.data) // 1024} KiB")
            result = await ep.call(request.subject, request.data)
        except ApiError as exc:
            await _respond_error(request, exc)
            return
        except natsfaults.TRANSIENT as exc:  # NATS did not answer the handler: a retry may well work
            log.warning("request met a passing NATS failure", endpoint=ep.name, error=str(exc) or type(exc).__name__)
            await _respond_error(request, natsfaults.unavailable(exc, ep.name))
            return
        except Exception:
            log.exception("request failed", endpoint=ep.name)
            await _respond_error(request, ApiError(Code.INTERNAL, "internal error; the service logged it"))
            return
        await request.respond(_encoder.encode(result))

    return dispatch


async def _respond_error(request: Request, exc: ApiError) -> None:
    body = _encoder.encode(ErrorReply(error=exc.body()))
    await request.respond(body, headers={
        "Nats-Service-Error": exc.message[:200], "Nats-Service-Error-Code": _HTTP_LIKE[exc.code]})
