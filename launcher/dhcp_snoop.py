"""The address a guest got from a layer-2 network's own DHCP server (one virtbus does not run), learnt
without a guest agent: the DHCP ACK for the guest's MAC, seen on the pod-side end of that NIC
(an AF_PACKET socket in the pod's namespace; the frame is parsed by launcher.dhcp_packet)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

import structlog

from launcher.dhcp_packet import ack_in_frame
from servicekit import netns_socket

log = structlog.get_logger()
ETH_P_ALL = 0x0003


def packet_socket_in_netns(netns: str, interface: str) -> socket.socket:
    """A raw socket on ``interface`` of ``netns``: every frame in and out of it."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
        return sock

    return netns_socket.socket_in(netns, make)


async def snoop_leases(sock: socket.socket, mac: str, on_address: Callable[[IPv4Address], Awaitable[None]],
                       stop: asyncio.Event) -> None:
    """Call ``on_address`` with each new address the guest of ``mac`` is ACKed, until ``stop``."""
    loop = asyncio.get_running_loop()
    known: IPv4Address | None = None
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            receiving = asyncio.ensure_future(loop.sock_recv(sock, 65535))
            done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                receiving.cancel()
                break
            found = ack_in_frame(receiving.result())
            if found is None or found[0] != mac.lower() or found[1] == known:
                continue
            known = found[1]
            log.info("dhcp lease seen", mac=mac, ip=str(known))
            await on_address(known)
    finally:
        stopping.cancel()
        sock.close()


async def snoop_in_netns(netns: str, interface: str, mac: str,
                         on_address: Callable[[IPv4Address], Awaitable[None]], stop: asyncio.Event) -> None:
    sock = await asyncio.to_thread(packet_socket_in_netns, netns, interface)
    log.info("dhcp snooper up", netns=netns, interface=interface, mac=mac)
    await snoop_leases(sock, mac, on_address, stop)
