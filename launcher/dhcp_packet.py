"""DHCP (RFC 2131/2132) for exactly one client, pure: parse a client's message, build the reply.

Like KubeVirt's built-in server, it answers only the VM's MAC and offers only the VM's address:
DISCOVER gets an OFFER, a REQUEST for that address an ACK, a REQUEST for any other a NAK.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN, OPT_MTU = 1, 3, 6, 12, 15, 26
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_MESSAGE_TYPE, OPT_SERVER_ID = 50, 51, 53, 54
OPT_T1, OPT_T2, OPT_CLASSLESS_ROUTES, OPT_END, OPT_PAD = 58, 59, 121, 255, 0
OPT_DOMAIN_SEARCH = 119
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, then the magic cookie and options


class MalformedPacket(ValueError):
    pass


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: IPv4Address
    prefix: int
    router: IPv4Address | None
    dns: list[IPv4Address]
    mtu: int | None
    routes: list[tuple[IPv4Network, IPv4Address]]
    hostname: str | None
    lease_seconds: int
    server_id: IPv4Address
    domain: str | None
    search: tuple[str, ...] = ()  # the resolver's search list (option 119)


@dataclass(frozen=True)
class Message:
    op: int
    xid: int
    flags: int
    ciaddr: IPv4Address
    giaddr: IPv4Address
    chaddr: bytes
    mac: str
    type: int
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def requested_ip(self) -> IPv4Address | None:
        raw = self.options.get(OPT_REQUESTED_IP)
        return IPv4Address(raw) if raw is not None and len(raw) == 4 else None

    @property
    def server_id(self) -> IPv4Address | None:
        raw = self.options.get(OPT_SERVER_ID)
        return IPv4Address(raw) if raw is not None and len(raw) == 4 else None


def parse(data: bytes) -> Message:
    if len(data) < _HEADER.size + len(MAGIC):
        raise MalformedPacket(f"{len(data)} bytes is too short for DHCP")
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yiaddr, _siaddr, giaddr, chaddr, _sname, _file = \
        _HEADER.unpack_from(data)
    if data[_HEADER.size:_HEADER.size + 4] != MAGIC:
        raise MalformedPacket("no DHCP magic cookie")
    if htype != 1 or hlen != 6:
        raise MalformedPacket(f"hardware type {htype}/{hlen} is not Ethernet")
    options: dict[int, bytes] = {}
    i = _HEADER.size + 4
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            raise MalformedPacket(f"option {code} runs past the end")
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + data[i + 1]]  # RFC 3396 concatenation
        i += 2 + data[i + 1]
    kind = options.get(OPT_MESSAGE_TYPE, b"")
    if len(kind) != 1:
        raise MalformedPacket("no DHCP message type")
    mac = ":".join(f"{b:02x}" for b in chaddr[:6])
    return Message(op=op, xid=xid, flags=flags, ciaddr=IPv4Address(ciaddr), giaddr=IPv4Address(giaddr),
                   chaddr=chaddr, mac=mac, type=kind[0], options=options)


def classless_routes(routes: list[tuple[IPv4Network, IPv4Address]]) -> bytes:
    """RFC 3442: width, the significant octets of the destination, the router."""
    out = bytearray()
    for net, via in routes:
        width = net.prefixlen
        out.append(width)
        out += net.network_address.packed[:(width + 7) // 8]
        out += via.packed
    return bytes(out)


def domain_search(names: tuple[str, ...]) -> bytes:
    """Option 119 (RFC 3397): the names in DNS wire form, one after another (no compression, which
    the RFC allows a server to leave out). A label is 1-63 bytes of a name we made ourselves."""
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError(f"{name!r} is no domain name")
            out += bytes([len(raw)]) + raw
        out.append(0)
    if len(out) > 255:
        raise ValueError("the search list is longer than one DHCP option holds")
    return bytes(out)


def _options(lease: Lease, kind: int) -> bytes:
    opts: list[tuple[int, bytes]] = [(OPT_MESSAGE_TYPE, bytes([kind])), (OPT_SERVER_ID, lease.server_id.packed)]
    if kind != NAK:
        mask = IPv4Network(f"0.0.0.0/{lease.prefix}").netmask
        opts += [(OPT_LEASE_TIME, struct.pack("!I", lease.lease_seconds)),
                 (OPT_T1, struct.pack("!I", lease.lease_seconds // 2)),
                 (OPT_T2, struct.pack("!I", lease.lease_seconds * 7 // 8)),
                 (OPT_MASK, mask.packed)]
        if lease.router is not None:
            opts.append((OPT_ROUTER, lease.router.packed))
        if lease.dns:
            opts.append((OPT_DNS, b"".join(d.packed for d in lease.dns)))
        if lease.hostname:
            opts.append((OPT_HOSTNAME, lease.hostname.encode()))
        if lease.domain:
            opts.append((OPT_DOMAIN, lease.domain.encode()))
        if lease.search:
            opts.append((OPT_DOMAIN_SEARCH, domain_search(lease.search)))
        if lease.mtu:
            opts.append((OPT_MTU, struct.pack("!H", lease.mtu)))
        if lease.routes:
            # Clients that get option 121 ignore option 3: the default route goes in it too.
            routes = list(lease.routes)
            if lease.router is not None and not any(n.prefixlen == 0 for n, _ in routes):
                routes.append((IPv4Network("0.0.0.0/0"), lease.router))
            opts.append((OPT_CLASSLESS_ROUTES, classless_routes(routes)))
    out = bytearray(MAGIC)
    for code, value in opts:
        for start in range(0, max(len(value), 1), 255):
            chunk = value[start:start + 255]
            out += bytes([code, len(chunk)]) + chunk
    out.append(OPT_END)
    return bytes(out)


def _build(msg: Message, lease: Lease, kind: int) -> bytes:
    yiaddr = lease.ip if kind in (OFFER, ACK) else IPv4Address(0)
    header = _HEADER.pack(BOOTREPLY, 1, 6, 0, msg.xid, 0, msg.flags, msg.ciaddr.packed if kind == ACK else bytes(4),
                          yiaddr.packed, bytes(4), msg.giaddr.packed, msg.chaddr, bytes(64), bytes(128))
    return (header + _options(lease, kind)).ljust(300, b"\0")  # BOOTP's minimum size


def reply_kind(msg: Message, lease: Lease) -> int | None:
    """What to answer, if anything."""
    if msg.op != BOOTREQUEST or msg.mac.lower() != lease.mac.lower():
        return None
    if msg.type == DISCOVER:
        return OFFER
    if msg.type == REQUEST:
        if msg.server_id is not None and msg.server_id != lease.server_id:
            return None  # the client chose another server
        wanted = msg.requested_ip or (msg.ciaddr if int(msg.ciaddr) else None)
        return ACK if wanted == lease.ip else NAK
    if msg.type == INFORM:
        return ACK
    return None  # RELEASE, DECLINE: nothing to answer; the address stays the VM's


def reply_for(msg: Message, lease: Lease) -> bytes | None:
    kind = reply_kind(msg, lease)
    return None if kind is None else _build(msg, lease, kind)


def broadcast_reply(msg: Message) -> bool:
    """RFC 2131 4.1: broadcast when the client asks for it or has no address yet."""
    return bool(msg.flags & 0x8000) or not int(msg.ciaddr)


_ETH_IP, _ETH_VLAN, _UDP = 0x0800, 0x8100, 17


def ack_in_frame(frame: bytes) -> tuple[str, IPv4Address] | None:
    """Pure: (client MAC, its address) if ``frame`` is an Ethernet frame carrying a DHCP ACK from a
    server (UDP 67 -> 68, one 802.1Q tag allowed), else None. What a snooper on the guest's NIC learns
    of a lease given by a DHCP server virtbus does not run (a layer-2 network's own)."""
    if len(frame) < 14:
        return None
    offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
    if ethertype == _ETH_VLAN and len(frame) >= 18:
        offset, ethertype = 18, int.from_bytes(frame[16:18], "big")
    if ethertype != _ETH_IP or len(frame) < offset + 20:
        return None
    ihl = (frame[offset] & 0x0F) * 4
    if frame[offset] >> 4 != 4 or ihl < 20 or frame[offset + 9] != _UDP:
        return None
    if int.from_bytes(frame[offset + 6:offset + 8], "big") & 0x3FFF:  # a fragment: not a whole DHCP message
        return None
    udp = offset + ihl
    if len(frame) < udp + 8:
        return None
    if (int.from_bytes(frame[udp:udp + 2], "big"), int.from_bytes(frame[udp + 2:udp + 4], "big")) != (67, 68):
        return None
    payload = frame[udp + 8:udp + max(8, int.from_bytes(frame[udp + 4:udp + 6], "big"))]
    try:
        msg = parse(payload)
    except MalformedPacket:
        return None
    if msg.op != BOOTREPLY or msg.type != ACK:
        return None
    yiaddr = IPv4Address(payload[16:20])
    return (msg.mac, yiaddr) if int(yiaddr) else None  # an ACK to an INFORM gives no address
