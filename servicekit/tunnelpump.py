"""A local byte stream (a socket, a WebSocket) joined to a NATS tunnel session, both ways, with the
window and timeouts of servicekit.tunnel. Used by the VMI's launcher (its end: QEMU's VNC socket)
and by the CLI's proxy and web console (their end: a viewer's connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from nats.aio.client import Client

from proto.errors import ApiError
from proto.vnc import CHUNK, decode_frame, encode_frame
from servicekit.cancelling import cancel_and_wait
from servicekit.datagramend import DatagramEnd
from servicekit.tunnel import Flow, TunnelBroken

TICK_S = 0.25  # how often a quiet session checks its keepalive and its peer
# why a session ended, when nothing went wrong: its local end closed, both streams ended (a
# half-closing session), or the peer closed (PEER_CLOSED, then the peer's reason)
LOCAL_CLOSED = "the other end closed"
BOTH_ENDED = "both ends closed"
PEER_CLOSED = "the peer closed"


def ended_cleanly(why: str) -> bool:
    """Whether run_tunnel's reason is an ordinary end rather than a failure."""
    return why in (LOCAL_CLOSED, BOTH_ENDED) or why.startswith(PEER_CLOSED)


class LocalEnd(Protocol):
    async def read(self, n: int) -> bytes: ...  # b"" once it closed
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class HalfClosingEnd(LocalEnd, Protocol):
    """An end whose stream may end one way while the other goes on, as a TCP socket's (port-forward)."""

    async def write_eof(self) -> None: ...  # nothing more will be written (shutdown(SHUT_WR))


class StreamEnd:
    """A socket's end (asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            if self.writer.can_write_eof():
                await self.writer.drain()
                self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Inbound:
    """The frames of one direction, subscribed before the session opens so none is missed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.sub: Any = None

    @classmethod
    async def subscribe(cls, nc: Client, subject: str) -> Inbound:
        inbound = cls()

        async def put(msg: Any) -> None:
            inbound.queue.put_nowait(msg.data)

        # generous pending limits: the window bounds what a well-behaved peer has in flight
        inbound.sub = await nc.subscribe(subject, cb=put, pending_msgs_limit=4096,
                                         pending_bytes_limit=64 * 1024 * 1024)
        return inbound

    async def unsubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()


async def run_stream_tunnel(nc: Client, local: HalfClosingEnd, inbound: Inbound, send_subject: str,
                            flow: Flow | None = None) -> str:
    """run_tunnel for a TCP connection (port-forward): either end's half-close is passed on (an eof
    frame one way, a shutdown of the socket's sending half the other), and the session goes on until
    both streams ended, either side closes, or the peer breaks the stream or goes silent. A client that
    sends its request and shuts its sending half still gets the whole answer, as over plain TCP."""
    return await run_tunnel(nc, local, inbound, send_subject, flow, write_eof=local.write_eof)


async def run_port_tunnel(nc: Client, local: HalfClosingEnd | DatagramEnd, inbound: Inbound, send_subject: str,
                          flow: Flow | None = None) -> str:
    """A port-forward session's tunnel: a TCP connection's (run_stream_tunnel), or a UDP flow's, which
    has no half-close and ends when it idles (servicekit.datagramend)."""
    if isinstance(local, DatagramEnd):
        return await run_tunnel(nc, local, inbound, send_subject, flow)
    return await run_stream_tunnel(nc, local, inbound, send_subject, flow)


async def run_tunnel(nc: Client, local: LocalEnd, inbound: Inbound, send_subject: str, flow: Flow | None = None,
                     clock: Callable[[], float] = time.monotonic,
                     write_eof: Callable[[], Awaitable[None]] | None = None) -> str:
    """Until either end closes, the peer breaks the stream or goes silent; returns why it ended.
    The peer is told (a close frame) unless it was the one to close; the local end is closed.
    With write_eof (run_stream_tunnel), the local end's EOF and the peer's eof frame are half-closes:
    the session ends once both happened."""
    flow = flow or Flow()
    flow.start(clock())
    room = asyncio.Event()
    room.set()
    peer_closed = False
    peer_ended = asyncio.Event()  # the peer's eof frame, once its stream is written out locally

    async def send(frame: Any) -> None:
        await nc.publish(send_subject, encode_frame(frame))

    async def outbound() -> str:
        while True:
            await room.wait()
            if not flow.room():
                room.clear()
                continue
            data = await local.read(min(CHUNK, flow.room()))
            if not data:
                if write_eof is None:
                    return LOCAL_CLOSED
                await send(flow.eof_frame(clock()))
                await peer_ended.wait()  # incoming goes on: the peer's data, acks, keepalives
                return BOTH_ENDED
            await send(flow.data_frame(data, clock()))
            if not flow.room():
                room.clear()

    async def incoming() -> str:
        nonlocal peer_closed
        while True:
            try:
                raw = await asyncio.wait_for(inbound.queue.get(), TICK_S)
            except TimeoutError:
                raw = None
            now = clock()
            if raw is not None:
                try:
                    frame = decode_frame(raw)
                    data = flow.on_frame(frame, now)
                except (ApiError, TunnelBroken) as exc:
                    return f"tunnel broken: {exc}"
                if flow.room():
                    room.set()
                if frame.close:
                    peer_closed = True
                    return f"{PEER_CLOSED}: {frame.close}"
                if data:
                    try:
                        await local.write(data)
                    except (ConnectionError, OSError):
                        return LOCAL_CLOSED
                    except ValueError as exc:  # the local end would not take it (a view-only filter)
                        return f"refused: {exc}"
                    flow.wrote(len(data))
                if frame.eof and not peer_ended.is_set():
                    if write_eof is None:  # a session that has no half-close (VNC): the peer's end is its end
                        return "the peer ended its stream"
                    await write_eof()
                    peer_ended.set()
                    if flow.both_ended:
                        return BOTH_ENDED
            elif flow.peer_gone(now):
                return f"the peer was silent for {flow.idle_timeout_s:.0f}s"
            if flow.ack_due() or flow.keepalive_due(clock()):
                await send(flow.ack_frame(clock()))

    async def say_goodbye(why: str) -> None:
        if not peer_closed:
            with contextlib.suppress(Exception):  # the bus may be what failed
                await send(flow.close_frame(why))
                await nc.flush(timeout=2)

    tasks = [asyncio.create_task(outbound()), asyncio.create_task(incoming())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        error = first.exception()
        why = first.result() if error is None else f"the bus failed: {error or type(error).__name__}"
    except asyncio.CancelledError:  # our side is going away (the VM stopped, the proxy ends): say so
        await asyncio.shield(say_goodbye("ended by its holder"))
        raise
    finally:
        await cancel_and_wait(tasks)
        await inbound.unsubscribe()
        await local.close()
    await say_goodbye(why)
    return why


async def serve_until_cancelled(subs: list[Any], sessions: Mapping[Any, asyncio.Task[str]]) -> None:
    """A tunnel server's life (the launcher's VNC, the handler's port-forward): its subscriptions
    held until it is cancelled, then dropped, and every open session ended, each telling its client
    (so none waits out the idle timeout)."""
    try:
        await asyncio.Event().wait()
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        open_now = list(sessions.values())
        for task in open_now:
            task.cancel()
        if open_now:
            await asyncio.wait(open_now, timeout=2)
