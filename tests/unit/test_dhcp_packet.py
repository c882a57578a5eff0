import struct
from ipaddress import IPv4Address, IPv4Network

import pytest

from launcher.dhcp_packet import (
    ACK,
    DISCOVER,
    NAK,
    OFFER,
    REQUEST,
    Lease,
    MalformedPacket,
    classless_routes,
    parse,
    reply_for,
)

MAC = "02:11:22:33:44:55"
LEASE = Lease(mac=MAC, ip=IPv4Address("10.0.2.2"), prefix=24, router=IPv4Address("10.0.2.1"),
              dns=[IPv4Address("10.0.2.1")], mtu=1400, routes=[], hostname="testvm", lease_seconds=3600,
              server_id=IPv4Address("10.0.2.1"), domain=None)


def client(kind: int, mac: str = MAC, options: bytes = b"", ciaddr: str = "0.0.0.0", flags: int = 0) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0xABCD, 0, flags,
                         IPv4Address(ciaddr).packed, bytes(4), bytes(4), bytes(4), chaddr, bytes(64), bytes(128))
    return header + b"\x63\x82\x53\x63" + bytes([53, 1, kind]) + options + b"\xff"


def options_of(reply: bytes) -> dict[int, bytes]:
    return parse(reply).options


def test_discover_gets_an_offer_with_every_option() -> None:
    reply = reply_for(parse(client(DISCOVER)), LEASE)
    assert reply is not None and len(reply) >= 300
    assert reply[16:20] == IPv4Address("10.0.2.2").packed  # yiaddr
    opts = options_of(reply)
    assert opts[53] == bytes([OFFER]) and opts[54] == IPv4Address("10.0.2.1").packed
    assert opts[1] == IPv4Address("255.255.255.0").packed and opts[3] == IPv4Address("10.0.2.1").packed
    assert opts[6] == IPv4Address("10.0.2.1").packed and opts[12] == b"testvm"
    assert struct.unpack("!H", opts[26])[0] == 1400 and struct.unpack("!I", opts[51])[0] == 3600


def test_request_for_the_lease_is_acked_any_other_is_naked() -> None:
    asked = bytes([50, 4]) + IPv4Address("10.0.2.2").packed + bytes([54, 4]) + IPv4Address("10.0.2.1").packed
    ack = reply_for(parse(client(REQUEST, options=asked)), LEASE)
    assert ack is not None and options_of(ack)[53] == bytes([ACK])
    wrong = bytes([50, 4]) + IPv4Address("10.0.2.9").packed
    nak = reply_for(parse(client(REQUEST, options=wrong)), LEASE)
    assert nak is not None and options_of(nak)[53] == bytes([NAK]) and nak[16:20] == bytes(4)


def test_renewal_by_ciaddr_is_acked() -> None:
    ack = reply_for(parse(client(REQUEST, ciaddr="10.0.2.2")), LEASE)
    assert ack is not None and options_of(ack)[53] == bytes([ACK])


def test_other_server_or_other_mac_gets_nothing() -> None:
    other_server = bytes([50, 4]) + IPv4Address("10.0.2.2").packed + bytes([54, 4]) + IPv4Address("9.9.9.9").packed
    assert reply_for(parse(client(REQUEST, options=other_server)), LEASE) is None
    assert reply_for(parse(client(DISCOVER, mac="02:00:00:00:00:01")), LEASE) is None


def test_classless_routes_rfc3442() -> None:
    assert classless_routes([(IPv4Network("0.0.0.0/0"), IPv4Address("10.0.2.1"))]) == bytes([0, 10, 0, 2, 1])
    assert classless_routes([(IPv4Network("10.0.0.0/8"), IPv4Address("10.0.2.1"))]) == bytes([8, 10, 10, 0, 2, 1])


@pytest.mark.parametrize("data", [b"", b"\x01" * 100, client(DISCOVER)[:-10].replace(b"\x63\x82\x53\x63", b"xxxx"),
                                  client(DISCOVER)[:240] + bytes([53, 9, 1])])
def test_garbage_is_malformed_not_a_crash(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse(data)
