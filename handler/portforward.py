"""The node's end of port-forward sessions (proto.portforward): a TCP connection, or a connected UDP
socket, to a port of one of this node's running VMIs, at its pod address in the node's network
namespace, joined to the session's frames (servicekit.tunnelpump) until either side ends it (or, for
UDP, until the flow idles: servicekit.datagramend).

The address is the VMI's, from this node's copy of its VMIs; the request names only the VMI and the
port. A VMI not Running here, without a pod address, or with MAX_SESSIONS open is refused, typed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from nats.aio.client import Client

from proto import subjects
from proto.api import decode_request, encode
from proto.errors import ApiError, Code, ErrorReply
from proto.portforward import (
    CONNECT_TIMEOUT_S,
    MAX_SESSIONS,
    UDP_IDLE_S,
    PortForwardOpen,
    PortForwardOpened,
    check_open,
)
from proto.state import VMI, Phase
from proto.vnc import WINDOW
from servicekit.datagramend import DatagramEnd, SocketDatagramEnd
from servicekit.netns_socket import socket_in
from servicekit.tunnel import Flow
from servicekit.tunnelpump import HalfClosingEnd, Inbound, StreamEnd, run_port_tunnel, serve_until_cancelled

log = structlog.get_logger()


class Dialer(Protocol):
    """TCP connections (what probes and port-forward's TCP sessions use)."""

    async def __call__(self, address: str, port: int) -> HalfClosingEnd: ...


class PortDialer(Dialer, Protocol):
    """...and UDP flows, for port-forward's UDP sessions."""

    async def datagram(self, address: str, port: int) -> DatagramEnd: ...


class NetnsDialer:
    """TCP connections and UDP flows made in the node's network namespace (None: this process's)."""

    def __init__(self, netns: str | None, udp_idle_s: float = UDP_IDLE_S) -> None:
        self.netns, self.udp_idle_s = netns, udp_idle_s

    async def __call__(self, address: str, port: int) -> HalfClosingEnd:
        sock = await self._socket(socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)), CONNECT_TIMEOUT_S)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return StreamEnd(reader, writer)

    async def datagram(self, address: str, port: int) -> DatagramEnd:
        sock = await self._socket(socket.SOCK_DGRAM)
        try:
            sock.connect((address, port))  # no handshake: where its datagrams go, whose it takes
        except BaseException:
            sock.close()
            raise
        return SocketDatagramEnd(sock, self.udp_idle_s)

    async def _socket(self, kind: int) -> socket.socket:
        return await asyncio.to_thread(socket_in, self.netns, lambda: socket.socket(socket.AF_INET, kind))


def pod_address(vmi: VMI | None, node: str, name: str) -> str:
    """Pure: where a session to this VMI connects, or why it cannot."""
    if vmi is None or vmi.node_name != node:
        raise ApiError(Code.NOT_FOUND, f"VMI {name} does not run on node {node}")
    if vmi.phase is not Phase.RUNNING or vmi.stop_requested:
        raise ApiError(Code.CONFLICT, f"VMI {name} is not running ({vmi.phase.value})")
    address = vmi.interfaces[0].ip_address if vmi.interfaces else None
    if not address or not any(n.kind == "pod" for n in vmi.spec.networks):
        raise ApiError(Code.INVALID, f"VMI {name} has no pod network address to forward to")
    return address.split("/")[0]


class PortForwardServer:
    def __init__(self, nc: Client, node: str, vmis: Callable[[], Awaitable[list[VMI]]], dial: PortDialer) -> None:
        self.nc, self.node, self.vmis, self.dial = nc, node, vmis, dial
        self.sessions: dict[tuple[str, str], asyncio.Task[str]] = {}  # (vmi, session)

    async def run(self) -> None:
        await serve_until_cancelled([await self.nc.subscribe(subjects.portforward_opens(self.node), cb=self._open)],
                                    self.sessions)

    async def _open(self, msg: Any) -> None:
        try:
            name = msg.subject.split(".")[-2]
            req = check_open(decode_request(msg.data, PortForwardOpen))
            if (name, req.session) in self.sessions:
                raise ApiError(Code.CONFLICT, f"port-forward session {req.session} is open already")
            if sum(1 for vmi, _ in self.sessions if vmi == name) >= MAX_SESSIONS:
                raise ApiError(Code.UNAVAILABLE, f"{name} has {MAX_SESSIONS} port-forward sessions open; try later")
            address = pod_address(next((v for v in await self.vmis() if v.name == name), None), self.node, name)
            try:
                local: HalfClosingEnd | DatagramEnd = await (
                    self.dial.datagram(address, req.port) if req.protocol == "UDP" else self.dial(address, req.port))
            except (OSError, TimeoutError) as exc:
                why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
                raise ApiError(Code.UNAVAILABLE, f"{req.protocol} port {req.port} of {name} ({address}): {why}",
                               "port") from None
            try:
                inbound = await Inbound.subscribe(self.nc,
                                                  subjects.portforward_session(self.node, name, req.session, "up"))
            except BaseException:
                await local.close()  # the guest's connection is not left open without its session
                raise
            down = subjects.portforward_session(self.node, name, req.session, "down")
            self.sessions[(name, req.session)] = asyncio.create_task(
                self._serve(name, req.session, req, local, inbound, down))
            reply: Any = PortForwardOpened(session=req.session, window=WINDOW)
        except ApiError as exc:
            reply = ErrorReply(error=exc.body())
        await msg.respond(encode(reply))

    async def _serve(self, name: str, session: str, req: PortForwardOpen, local: HalfClosingEnd | DatagramEnd,
                     inbound: Inbound, down: str) -> str:
        bound = log.bind(vmi=name, node=self.node, port=req.port, protocol=req.protocol, session=session)
        bound.info("port-forward session opened")
        try:
            why = await run_port_tunnel(self.nc, local, inbound, down, Flow())
            dropped = local.dropped if isinstance(local, DatagramEnd) else 0
            bound.info("port-forward session closed", why=why, **({"dropped": dropped} if dropped else {}))
            return why
        finally:
            self.sessions.pop((name, session), None)
