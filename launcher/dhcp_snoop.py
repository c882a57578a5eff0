"""The address a guest got from a layer-2 network's own DHCP server (one virtbus does not run), learnt
without a guest agent: the DHCP ACK for the guest's MAC, seen on the pod-side end of that NIC
(an AF_PACKET socket in the pod's namespace; the frame is parsed by launcher.dhcp_packet)."""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

import structlog

from launcher.dhcp_packet import ack_in_frame
from servicekit import netns_socket

log = structlog.get_logger()
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
# Classic BPF, so the kernel hands this socket only what could be a server's DHCP message (IPv4, UDP,
# not a fragment after the first, source port 67) and not every frame of the guest's traffic
# (tcpdump -dd "ip and udp src port 67" less the fragment-offset subtlety); ack_in_frame checks the rest.
_FILTER = (
    (0x28, 0, 0, 12),  # ldh [12]: ethertype
    (0x15, 0, 8, 0x0800),  # IPv4, else drop
    (0x30, 0, 0, 23),  # ldb [23]: protocol
    (0x15, 0, 6, 17),  # UDP, else drop
    (0x28, 0, 0, 20),  # ldh [20]: flags and fragment offset
    (0x45, 4, 0, 0x1FFF),  # a later fragment: drop
    (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf): the IP header's length
    (0x48, 0, 0, 14),  # ldh [x+14]: the UDP source port
    (0x15, 0, 1, 67),  # 67, else drop
    (0x06, 0, 0, 0x40000),  # accept the whole frame
    (0x06, 0, 0, 0),  # drop
)


def _attach_filter(sock: socket.socket) -> None:
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _FILTER))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(_FILTER), ctypes.addressof(program)))


def packet_socket_in_netns(netns: str, interface: str) -> socket.socket:
    """A raw socket on ``interface`` of ``netns``: every frame in and out of it."""
    def make() -> socket.socket:
        # Protocol 0 receives nothing until bind: a socket opened with ETH_P_ALL would queue frames of
        # every interface unfiltered in the moment before the filter is attached.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        _attach_filter(sock)
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
