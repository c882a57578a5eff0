"""Links made, wired and read over one open pyroute2 socket: the link half of
``servicekit.netlink.PyrouteNetlink`` (which opens the socket in its namespace, runs these in it and
turns every kernel refusal into a ``NetlinkError``). Each function does what one ip(8) command did,
with the same netlink request where pyroute2 has it, so the kernel's state ends up the same.

A missing link is the kernel's own ENODEV, raised before any request that names it.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Literal

from pyroute2.netlink.exceptions import NetlinkError as KernelError

LinkKind = Literal["bridge", "dummy"]
BRIDGE_MODE_HAIRPIN = 1  # IFLA_BRPORT_MODE: a frame may leave by the port it came in by


def index(ipr: Any, link: str) -> int:
    found = ipr.link_lookup(ifname=link)
    if not found:
        raise KernelError(errno.ENODEV, f"no link {link!r}")
    return int(found[0])


def add_veth(ipr: Any, name: str, peer: str, peer_netns: str) -> None:
    """``ip link add NAME type veth peer name PEER netns NS``: the peer is made in the namespace at
    the path ``peer_netns`` (opened here: the kernel takes it as a file descriptor)."""
    fd = os.open(peer_netns, os.O_RDONLY)
    try:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": fd})
    finally:
        os.close(fd)


def add_tap(ipr: Any, name: str) -> None:
    """``ip tuntap add dev NAME mode tap``: persistent, no packet information header (ip(8)'s default).
    pyroute2 makes it with the tun ioctls in a child process that enters the socket's namespace."""
    if ipr.link_lookup(ifname=name):
        # TUNSETIFF would attach to an existing tap (or refuse another kind with EINVAL): as ip(8)
        # the name being taken is EEXIST, whatever holds it
        raise KernelError(errno.EEXIST, f"link {name!r} exists")
    ipr.link("add", ifname=name, kind="tuntap", mode="tap", ifr={"no_pi": 1})


def set_port(ipr: Any, link: str, *, hairpin: bool | None, learning: bool | None) -> None:
    """``ip link set LINK type bridge_slave hairpin on`` / ``bridge link set dev LINK learning off``:
    EOPNOTSUPP unless the link is a bridge's port."""
    flags: dict[str, int] = {}
    if hairpin is not None:
        flags["mode"] = BRIDGE_MODE_HAIRPIN if hairpin else 0
    if learning is not None:
        flags["learning"] = int(learning)
    at = index(ipr, link)
    if flags:
        ipr.brport("set", index=at, **flags)


def mac(ipr: Any, link: str) -> str:
    """The link's hardware address, as ``ip -o link show`` prints it after ``link/ether``."""
    return str(ipr.get_links(index(ipr, link))[0].get("address"))


def flush_addresses(ipr: Any, link: str) -> None:
    """``ip addr flush dev LINK``: every address of every family (IPv6 link-local included)."""
    at = index(ipr, link)
    for msg in ipr.get_addr(index=at):
        try:
            ipr.addr("del", index=at, address=msg.get("address"), prefixlen=msg["prefixlen"])
        except KernelError as exc:
            if exc.code != errno.EADDRNOTAVAIL:  # gone with its primary (a secondary): as ip(8), fine
                raise
