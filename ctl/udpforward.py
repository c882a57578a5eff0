"""port-forward's UDP side on this host: one listening socket, and a session per client address (as
virtctl's udpProxy keeps a tunnel per client). A client's first datagram opens its session, held
until the flow idles (servicekit.datagramend); what the guest sends back goes to that client alone.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

from proto.errors import ApiError, Code
from proto.portforward import MAX_SESSIONS
from servicekit.cancelling import cancel_and_wait
from servicekit.datagramend import QueueDatagramEnd

Address = tuple[Any, ...]  # (host, port) of a client, as the socket gives it
OpenFlow = Callable[[QueueDatagramEnd], Awaitable[str]]  # a session for this end; why it ended


class UdpForward(asyncio.DatagramProtocol):
    def __init__(self, open_flow: OpenFlow, label: str, idle_s: float) -> None:
        self.open_flow, self.label, self.idle_s = open_flow, label, idle_s
        self.flows: dict[Address, QueueDatagramEnd] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.Event()
        self.port = 0
        self.refused = 0  # datagrams of new clients beyond MAX_SESSIONS

    @classmethod
    async def listen(cls, open_flow: OpenFlow, label: str, host: str, port: int, idle_s: float) -> UdpForward:
        """Listening on host:port (0: a free one), or a typed error naming the ports."""
        try:
            _, forward = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: cls(open_flow, label, idle_s), local_addr=(host, port))
        except OSError as exc:  # taken, not this host's, a name that resolves to nothing
            raise ApiError(Code.INVALID, f"cannot listen on UDP {host}:{port}: {exc.strerror or exc}",
                           field="ports") from None
        return forward

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram endpoint's transport (3.11's selector one does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = int(transport.get_extra_info("sockname")[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        end = self.flows.get(addr)
        if end is None:
            if len(self.flows) >= MAX_SESSIONS:
                self.refused += 1  # the node would refuse its session too: lost, as a full queue loses it
                return
            transport = self.transport
            assert transport is not None
            end = QueueDatagramEnd(lambda reply: transport.sendto(reply, addr), self.idle_s)
            self.flows[addr] = end
            task = asyncio.create_task(self._session(addr, end))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        end.deliver(data)

    async def _session(self, addr: Address, end: QueueDatagramEnd) -> None:
        try:
            why = await self.open_flow(end)
        except ApiError as exc:
            why = str(exc)
        finally:
            self.flows.pop(addr, None)  # the client's next datagram opens a new session
        print(f"port-forward: UDP from {addr[0]}:{addr[1]} to {self.label} ended: {why}", file=sys.stderr)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        await cancel_and_wait(list(self.tasks))
