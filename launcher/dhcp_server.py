"""The thin shell around dhcp_packet: one UDP socket on port 67, bound to the guest's bridge inside
the pod's namespace, answering the VM's DHCP client on the launcher's event loop."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import structlog

from launcher.dhcp_packet import ACK, NAK, OFFER, Lease, MalformedPacket, broadcast_reply, parse, reply_for
from servicekit import netns_socket

log = structlog.get_logger()
_NAMES = {OFFER: "OFFER", ACK: "ACK", NAK: "NAK"}


def socket_in_netns(netns: str, interface: str) -> socket.socket:
    """A DHCP server socket made inside netns, on the guest's bridge."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", 67))
        sock.setblocking(False)
        return sock

    return netns_socket.socket_in(netns, make)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse(data)
        except MalformedPacket as exc:
            log.info("dhcp: ignored a malformed packet", reason=str(exc))
            return
        reply = reply_for(msg, self.lease)
        if reply is None or self.transport is None:
            return
        dest = "255.255.255.255" if broadcast_reply(msg) else str(msg.ciaddr)
        self.transport.sendto(reply, (dest, 68))
        kind = reply[240 + 2] if len(reply) > 242 else 0
        log.info("dhcp reply", kind=_NAMES.get(kind, str(kind)), mac=msg.mac,
                 ip=str(self.lease.ip) if kind != NAK else None, requested=str(msg.requested_ip or ""))


async def serve_dhcp(lease: Lease, sock: socket.socket, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(lease), sock=sock)
    try:
        await stop.wait()
    finally:
        transport.close()


async def serve_dhcp_in_netns(netns: str, lease: Lease, interface: str, stop: asyncio.Event) -> None:
    sock = socket_in_netns(netns, interface)
    log.info("dhcp server up", netns=netns, interface=interface, mac=lease.mac, ip=str(lease.ip))
    await serve_dhcp(lease, sock, stop)


