"""What the snooper of a layer-2 NIC takes from a frame: only a server's DHCP ACK gives (MAC, address)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from launcher.dhcp_packet import ACK, DISCOVER, OFFER, REQUEST, ack_in_frame, parse, reply_for
from tests.unit.test_dhcp_packet import LEASE, MAC, client

REQUESTING = struct.pack("!BB4s", 50, 4, IPv4Address("10.0.2.2").packed)


def frame(payload: bytes, *, sport: int = 67, dport: int = 68, proto: int = 17, vlan: int | None = None,
          frag: int = 0) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, frag, 64, proto, 0,
                      IPv4Address("10.0.2.1").packed, IPv4Address("255.255.255.255").packed)
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + tag + b"\x08\x00" + iph + udp + b"\0" * 6  # + padding


def ack() -> bytes:
    reply = reply_for(parse(client(REQUEST, options=REQUESTING)), LEASE)
    assert reply is not None and parse(reply).type == ACK
    return reply


def test_an_ack_gives_the_clients_mac_and_address() -> None:
    assert ack_in_frame(frame(ack())) == (MAC, IPv4Address("10.0.2.2"))


def test_an_ack_on_a_vlan_tagged_frame() -> None:
    assert ack_in_frame(frame(ack(), vlan=100)) == (MAC, IPv4Address("10.0.2.2"))


def test_an_offer_is_not_a_lease() -> None:
    offer = reply_for(parse(client(DISCOVER)), LEASE)
    assert offer is not None and parse(offer).type == OFFER
    assert ack_in_frame(frame(offer)) is None


@pytest.mark.parametrize("bad", [
    frame(ack(), sport=68, dport=67),  # a client's message, not a server's
    frame(ack(), proto=6),  # not UDP
    frame(ack(), frag=0x2000),  # a fragment
    frame(client(REQUEST, options=REQUESTING), sport=67, dport=68),  # a BOOTREQUEST, however it came
    frame(b"\x01" * 50),  # too short for DHCP
    frame(ack())[:30],  # cut off
    b"",
    b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 60,  # IPv6
])
def test_anything_else_gives_nothing(bad: bytes) -> None:
    assert ack_in_frame(bad) is None
