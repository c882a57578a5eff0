"""Links made, wired and read: the link half of ``servicekit.netlink.KernelNetlink`` (which opens
the sockets in its namespace, runs these in it and turns every kernel refusal into a
``NetlinkError``). Each function does what one ip(8) command did, with the request ip(8) sends
(``servicekit.rtnl``), so the kernel's state ends up the same. The one dump here (an address flush)
goes through pyroute2's parser; it is no part of a launch.

A missing link is the kernel's own ENODEV.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Any, Literal

from pyroute2.netlink.exceptions import NetlinkError as KernelError

from servicekit import rtnl
from servicekit.rtnl_socket import RtnlSocket

LinkKind = Literal["bridge", "dummy"]
# linux/if_tun.h
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags in its union


def add_link(sock: RtnlSocket, name: str, kind: LinkKind) -> None:
    sock.call(lambda seq: rtnl.new_link(seq, name, kind))


def add_veth(sock: RtnlSocket, name: str, peer: str, peer_netns: str) -> None:
    """``ip link add NAME type veth peer name PEER netns NS``: the peer is made in the namespace at
    the path ``peer_netns`` (opened here: the kernel takes it as a file descriptor)."""
    fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock.call(lambda seq: rtnl.new_veth(seq, name, peer, fd))
    finally:
        os.close(fd)


def add_tap(sock: RtnlSocket, name: str) -> None:
    """``ip tuntap add dev NAME mode tap``: persistent, no packet information header (ip(8)'s default),
    made with the tun ioctls by this thread, in the namespace it is in (the socket's)."""
    try:
        sock.index(name)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
    else:
        # TUNSETIFF would attach to an existing tap (or refuse another kind with EINVAL): as ip(8)
        # the name being taken is EEXIST, whatever holds it
        raise OSError(errno.EEXIST, f"link {name!r} exists")
    # a name no link can have was refused by the lookup (rtnl.WireError), before any tap is made
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)  # outlives this descriptor, for QEMU to open
    finally:
        os.close(fd)


def set_port(sock: RtnlSocket, link: str, *, hairpin: bool | None, learning: bool | None) -> None:
    """``ip link set LINK type bridge_slave hairpin on learning off``: EOPNOTSUPP unless the link is
    a bridge's port; ENODEV if there is no such link, also with nothing to set."""
    flags = rtnl.port_flags(hairpin=hairpin, learning=learning)
    if not flags:
        sock.index(link)
        return
    sock.call(lambda seq: rtnl.set_link(seq, link, port=flags))


def mac(sock: RtnlSocket, link: str) -> str:
    """The link's hardware address, as ``ip -o link show`` prints it after ``link/ether``."""
    return sock.link(link).mac


def dump_index(ipr: Any, link: str) -> int:
    """The link's index over a pyroute2 socket, for the dumps that go through it; ENODEV if none."""
    found = ipr.link_lookup(ifname=link)
    if not found:
        raise KernelError(errno.ENODEV, f"no link {link!r}")
    return int(found[0])


def flush_addresses(ipr: Any, link: str) -> None:
    """``ip addr flush dev LINK``: every address of every family (IPv6 link-local included)."""
    at = dump_index(ipr, link)
    for msg in ipr.get_addr(index=at):
        try:
            ipr.addr("del", index=at, address=msg.get("address"), prefixlen=msg["prefixlen"])
        except KernelError as exc:
            if exc.code != errno.EADDRNOTAVAIL:  # gone with its primary (a secondary): as ip(8), fine
                raise
