"""rtnetlink's wire format for the few requests a launch makes (links, addresses, routes, a
neighbour entry): pure functions from values to the bytes of one request, and from the kernel's
answer back to values.
``servicekit.rtnl_socket`` sends them; ``servicekit.netlink.KernelNetlink`` says what to send.

Why not pyroute2 for these: its request processing cost 2-4 ms of CPU per operation (a socket with
an event loop of its own, a request processor, a generic message encoder), ~50 ms per launch over
its ~16 operations, where the bytes below take tens of microseconds. Each request is the one ip(8)
sends for the same command, so the kernel's state ends up the same. pyroute2 still parses the
rarer dumps (``servicekit.netlink``).

The layouts are linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h and
linux/neighbour.h, whose numbers are kernel ABI.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET, AF_UNSPEC

# netlink.h
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLM_F_CAPPED = 0x100  # in an error's header: the request it echoes is cut to its header
NLM_F_ACK_TLVS = 0x200  # in an error's header: attributes (the kernel's message) follow
NLMSGERR_ATTR_MSG = 1
# rtnetlink.h
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
# if_link.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING = 4, 8
IFF_UP = 0x1
# if_addr.h
IFA_ADDRESS, IFA_LOCAL = 1, 2
# neighbour.h
NDA_DST = 1
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80  # neighbours `ip neigh flush` leaves alone

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, padding, index, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src length, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_ERROR = struct.Struct("=i")  # nlmsgerr's error, before the request's header it echoes
IFNAMSIZ = 16


class WireError(ValueError):
    """Bytes that are no netlink answer, or a value no request can carry (a name too long)."""


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes as every attribute is."""
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def name_attr(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw or b"/" in raw:
        raise WireError(f"{name!r} is no interface name")
    return attr(IFLA_IFNAME, raw + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


# --- requests ----------------------------------------------------------------------------------------
def new_link(seq: int, name: str, kind: str, *, data: bytes = b"") -> bytes:
    """``ip link add NAME type KIND`` (down, refused if the name is taken)."""
    info = attr(IFLA_INFO_KIND, kind.encode()) + (nested(IFLA_INFO_DATA, data) if data else b"")
    return message(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq,
                   ifinfo() + name_attr(name) + nested(IFLA_LINKINFO, info))


def new_veth(seq: int, name: str, peer: str, peer_netns_fd: int) -> bytes:
    """``ip link add NAME type veth peer name PEER netns NS``: NS given as an open descriptor."""
    peer_info = ifinfo() + name_attr(peer) + u32(IFLA_NET_NS_FD, peer_netns_fd)
    return new_link(seq, name, "veth", data=attr(VETH_INFO_PEER, peer_info))


def set_link(seq: int, name: str, *, up: bool | None = None, mac: bytes | None = None,
             master: int | None = None, port: bytes = b"") -> bytes:
    """``ip link set NAME [up|down] [address MAC] [master M] [type bridge_slave ...]``; the kernel
    finds the link by its name (ENODEV if none). ``port``: bridge port attributes (``port_flags``)."""
    body = ifinfo(flags=IFF_UP if up else 0, change=IFF_UP if up is not None else 0) + name_attr(name)
    if mac is not None:
        body += attr(IFLA_ADDRESS, mac)
    if master is not None:
        body += u32(IFLA_MASTER, master)
    if port:
        body += nested(IFLA_LINKINFO, attr(IFLA_INFO_SLAVE_KIND, b"bridge\0"), nested(IFLA_INFO_SLAVE_DATA, port))
    return message(RTM_NEWLINK, NLM_F_ACK, seq, body)


def port_flags(*, hairpin: bool | None, learning: bool | None) -> bytes:
    return ((u8(IFLA_BRPORT_MODE, int(hairpin)) if hairpin is not None else b"")
            + (u8(IFLA_BRPORT_LEARNING, int(learning)) if learning is not None else b""))


def del_link(seq: int, name: str) -> bytes:
    return message(RTM_DELLINK, NLM_F_ACK, seq, ifinfo() + name_attr(name))


def get_link(seq: int, name: str) -> bytes:
    """``ip link show NAME``: answered by one RTM_NEWLINK (``link_of``) or an error (ENODEV)."""
    return message(RTM_GETLINK, 0, seq, ifinfo() + name_attr(name))


def address(seq: int, command: str, index: int, interface: IPv4Interface) -> bytes:
    """``ip addr add|replace|del A/P dev I``: IFA_LOCAL and IFA_ADDRESS both the address, no broadcast."""
    kind, flags = {"add": (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
                   "replace": (RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE),
                   "del": (RTM_DELADDR, 0)}[command]
    raw = interface.ip.packed
    body = (_IFADDR.pack(AF_INET, interface.network.prefixlen, 0, 0, index)
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))
    return message(kind, NLM_F_ACK | flags, seq, body)


def route(seq: int, command: str, dst: IPv4Network, *, via: IPv4Address | None = None, oif: int | None = None,
          protocol: int = 0, scope: int = 0) -> bytes:
    """``ip route replace|del DST [via GW] [dev OIF]`` in the main table. A delete names scope
    RT_SCOPE_NOWHERE and no type, which matches the route whatever its scope (as ip(8))."""
    replace = command == "replace"
    body = _RTMSG.pack(AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN, protocol, scope,
                       RTN_UNICAST if replace else 0, 0)
    if dst.prefixlen:
        body += attr(RTA_DST, dst.network_address.packed)
    if via is not None:
        body += attr(RTA_GATEWAY, via.packed)
    if oif is not None:
        body += u32(RTA_OIF, oif)
    return message(RTM_NEWROUTE if replace else RTM_DELROUTE,
                   NLM_F_ACK | (NLM_F_CREATE | NLM_F_REPLACE if replace else 0), seq, body)


def neighbour(seq: int, command: str, index: int, address: IPv4Address) -> bytes:
    """``ip neigh get|del ADDRESS dev I``: a get (Linux 5.0 on) is answered by one RTM_NEWNEIGH
    (``neighbour_state``), or ENOENT when there is no such entry; a delete takes one in any state."""
    kind, flags = {"get": (RTM_GETNEIGH, 0), "del": (RTM_DELNEIGH, NLM_F_ACK)}[command]
    return message(kind, flags, seq, _NDMSG.pack(AF_INET, index, 0, 0, 0) + attr(NDA_DST, address.packed))


def neighbour_state(body: bytes) -> int:
    """The NUD_* state bits of an RTM_NEWNEIGH body."""
    if len(body) < _NDMSG.size:
        raise WireError("a neighbour message shorter than its header")
    return int(_NDMSG.unpack_from(body)[2])


# --- answers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One message of the kernel's: its type and sequence; for an error message the errno (0 for
    an acknowledgement) and the kernel's own words if it gave any; else the body."""
    kind: int
    seq: int
    error: int = 0
    detail: str = ""
    body: bytes = b""


def answers(data: bytes) -> Iterator[Answer]:
    at = 0
    while at + _HEADER.size <= len(data):
        size, kind, flags, seq, _ = _HEADER.unpack_from(data, at)
        if size < _HEADER.size or at + size > len(data):
            raise WireError(f"a netlink message of {size} bytes at {at} of {len(data)}")
        body = data[at + _HEADER.size:at + size]
        if kind == NLMSG_ERROR:
            if len(body) < _ERROR.size:
                raise WireError(f"an error message of {size} bytes at {at}: no error code in it")
            (error,) = _ERROR.unpack_from(body)
            detail = ""
            if flags & NLM_F_ACK_TLVS and len(body) >= _ERROR.size + _HEADER.size:
                # the request comes back before them: its header, and its body unless capped
                echoed = _HEADER.size if flags & NLM_F_CAPPED else _HEADER.unpack_from(body, _ERROR.size)[0]
                for kind_, payload in attributes(body[_ERROR.size + echoed:]):
                    if kind_ == NLMSGERR_ATTR_MSG:
                        detail = payload.rstrip(b"\0").decode(errors="replace")
            yield Answer(kind, seq, error=-error, detail=detail)
        else:
            yield Answer(kind, seq, body=body)
        at += (size + 3) & ~3


def attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + _ATTR.size <= len(data):
        size, kind = _ATTR.unpack_from(data, at)
        if size < _ATTR.size:
            raise WireError(f"an attribute of {size} bytes")
        yield kind & ~NLA_F_NESTED, data[at + _ATTR.size:at + size]
        at += (size + 3) & ~3


@dataclass(frozen=True)
class Link:
    index: int
    mac: str


def link_of(body: bytes) -> Link:
    """A link's index and hardware address from an RTM_NEWLINK body."""
    if len(body) < _IFINFO.size:
        raise WireError("a link message shorter than its header")
    _, _, index, _, _ = _IFINFO.unpack_from(body)
    mac = next((payload for kind, payload in attributes(body[_IFINFO.size:]) if kind == IFLA_ADDRESS), b"")
    return Link(index, ":".join(f"{b:02x}" for b in mac))


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise WireError(f"{mac!r} is no hardware address") from None
    if len(raw) != 6 or any(len(p) not in (1, 2) for p in parts):
        raise WireError(f"{mac!r} is no hardware address")
    return raw
