"""rtnetlink's wire format as virtbus writes it: each request is read back by pyroute2's own parser
(an independent reading of the same kernel headers) and must say what ip(8) would have asked; the
kernel's answers (acknowledgements, errors with its words, a link) are read back to values."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from servicekit import rtnl


def parsed(cls: Any, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


def test_a_bridge_is_asked_for_as_ip_link_add_does() -> None:
    data = rtnl.new_link(7, "k6t-eth0", "bridge")
    msg = parsed(ifinfmsg, data)
    assert msg["header"]["type"] == rtnl.RTM_NEWLINK
    assert msg["header"]["sequence_number"] == 7
    assert msg["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert msg["header"]["length"] == len(data)
    assert msg.get("ifname") == "k6t-eth0"
    assert msg.get(("linkinfo", "kind")) == "bridge"


def test_a_veth_names_its_peer_and_the_peers_namespace() -> None:
    msg = parsed(ifinfmsg, rtnl.new_veth(1, "eth0", "vp0123456789", 42))
    assert msg.get("ifname") == "eth0"
    assert msg.get(("linkinfo", "kind")) == "veth"
    peer = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert (peer.get_attr("IFLA_IFNAME"), peer.get_attr("IFLA_NET_NS_FD")) == ("vp0123456789", 42)


def test_a_link_is_set_by_its_name() -> None:
    up = parsed(ifinfmsg, rtnl.set_link(3, "tap0", up=True, master=9))
    assert (up["index"], up["flags"], up["change"]) == (0, rtnl.IFF_UP, rtnl.IFF_UP)
    assert (up.get("ifname"), up.get("master")) == ("tap0", 9)
    assert up["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK  # no CREATE: a missing link is ENODEV
    down = parsed(ifinfmsg, rtnl.set_link(4, "eth0", up=False, mac=rtnl.mac_bytes("02:00:00:aa:bb:0c")))
    assert (down["flags"], down["change"], down.get("address")) == (0, rtnl.IFF_UP, "02:00:00:aa:bb:0c")
    untouched = parsed(ifinfmsg, rtnl.set_link(5, "eth0", master=2))
    assert untouched["change"] == 0  # neither up nor down: the link stays as it is


def test_bridge_port_flags_as_ip_link_set_type_bridge_slave() -> None:
    msg = parsed(ifinfmsg, rtnl.set_link(1, "vp01", port=rtnl.port_flags(hairpin=True, learning=False)))
    assert msg.get(("linkinfo", "slave_kind")) == "bridge"
    data = msg.get(("linkinfo", "slave_data"))
    assert (data.get("mode"), data.get("learning")) == (1, 0)
    assert rtnl.port_flags(hairpin=None, learning=None) == b""


@pytest.mark.parametrize(("command", "kind", "flags"), [
    ("add", rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL),
    ("replace", rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE),
    ("del", rtnl.RTM_DELADDR, 0),
])
def test_addresses(command: str, kind: int, flags: int) -> None:
    msg = parsed(ifaddrmsg, rtnl.address(2, command, 5, IPv4Interface("10.0.2.1/24")))
    assert msg["header"]["type"] == kind
    assert msg["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | flags
    assert (msg["index"], msg["prefixlen"], msg.get("local"), msg.get("address")) == (5, 24, "10.0.2.1", "10.0.2.1")
    assert msg.get("broadcast") is None  # as ip(8) without "brd"


def test_routes_in_the_main_table() -> None:
    default = parsed(rtmsg, rtnl.route(1, "replace", IPv4Network("0.0.0.0/0"), via=IPv4Address("10.244.0.1"),
                                       protocol=3))
    assert default["header"]["type"] == rtnl.RTM_NEWROUTE
    assert (default["dst_len"], default.get("dst"), default.get("gateway")) == (0, None, "10.244.0.1")
    assert (default["table"], default["proto"], default["type"], default["scope"]) == (254, 3, rtnl.RTN_UNICAST, 0)
    onlink = parsed(rtmsg, rtnl.route(2, "replace", IPv4Network("10.9.0.0/16"), oif=4, scope=253))
    assert (onlink.get("dst"), onlink["dst_len"], onlink.get("oif"), onlink["scope"]) == ("10.9.0.0", 16, 4, 253)
    gone = parsed(rtmsg, rtnl.route(3, "del", IPv4Network("10.9.0.0/16"), scope=255))
    assert gone["header"]["type"] == rtnl.RTM_DELROUTE
    assert (gone["type"], gone["scope"]) == (0, 255)  # whatever the route's type and scope: as ip route del


def test_one_neighbour_entry_asked_for_and_deleted_as_ip_neigh_does() -> None:
    get = parsed(ndmsg, rtnl.neighbour(4, "get", 9, IPv4Address("10.244.0.5")))
    assert (get["header"]["type"], get["header"]["flags"]) == (rtnl.RTM_GETNEIGH, rtnl.NLM_F_REQUEST)  # no dump
    assert (get["family"], get["ifindex"], get["state"], get.get("dst")) == (2, 9, 0, "10.244.0.5")
    gone = parsed(ndmsg, rtnl.neighbour(5, "del", 9, IPv4Address("10.244.0.5")))
    assert (gone["header"]["type"], gone["header"]["flags"]) == (rtnl.RTM_DELNEIGH, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK)
    assert (gone["ifindex"], gone.get("dst")) == (9, "10.244.0.5")
    entry = struct.pack("=BxxxiHBB", 2, 9, rtnl.NUD_PERMANENT, 0, 1) + rtnl.attr(rtnl.NDA_DST, bytes([10, 244, 0, 5]))
    assert rtnl.neighbour_state(entry) == rtnl.NUD_PERMANENT
    with pytest.raises(rtnl.WireError):
        rtnl.neighbour_state(entry[:8])


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a\0b"])
def test_a_name_no_link_can_have_is_refused_before_anything_is_sent(name: str) -> None:
    with pytest.raises(rtnl.WireError):
        rtnl.set_link(1, name, up=True)


@pytest.mark.parametrize("mac", ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "zz:00:00:00:00:00", "020:0:0:0:0:0"])
def test_a_malformed_hardware_address_is_refused(mac: str) -> None:
    with pytest.raises(rtnl.WireError):
        rtnl.mac_bytes(mac)


def error(seq: int, err: int, words: str = "") -> bytes:
    """An error message as the kernel sends it to a socket with NETLINK_CAP_ACK and NETLINK_EXT_ACK."""
    echoed = struct.pack("=IHHII", 40, rtnl.RTM_NEWLINK, 5, seq, 0)
    tlvs = rtnl.attr(rtnl.NLMSGERR_ATTR_MSG, words.encode() + b"\0") if words else b""
    flags = rtnl.NLM_F_CAPPED | (rtnl.NLM_F_ACK_TLVS if words else 0)
    body = struct.pack("=i", -err) + echoed + tlvs
    return struct.pack("=IHHII", 16 + len(body), rtnl.NLMSG_ERROR, flags, seq, 1234) + body


def test_the_kernels_answers() -> None:
    ack, refusal = rtnl.answers(error(1, 0) + error(2, 19, "Device does not exist"))
    assert (ack.kind, ack.seq, ack.error) == (rtnl.NLMSG_ERROR, 1, 0)
    assert (refusal.seq, refusal.error, refusal.detail) == (2, 19, "Device does not exist")


def test_a_link_read_back() -> None:
    body = rtnl.ifinfo(index=12) + rtnl.name_attr("eth0") + rtnl.attr(rtnl.IFLA_ADDRESS, bytes.fromhex("0a58ac1e0001"))
    (answer,) = rtnl.answers(struct.pack("=IHHII", 16 + len(body), rtnl.RTM_NEWLINK, 0, 9, 0) + body)
    assert rtnl.link_of(answer.body) == rtnl.Link(12, "0a:58:ac:1e:00:01")


def test_bytes_that_are_no_answer() -> None:
    with pytest.raises(rtnl.WireError):
        list(rtnl.answers(struct.pack("=IHHII", 400, rtnl.RTM_NEWLINK, 0, 1, 0)))  # longer than what came
    with pytest.raises(rtnl.WireError):
        list(rtnl.answers(struct.pack("=IHHII", 8, rtnl.RTM_NEWLINK, 0, 1, 0)))  # shorter than a header
    with pytest.raises(rtnl.WireError):  # an error message too short for its error code
        list(rtnl.answers(struct.pack("=IHHII", 18, rtnl.NLMSG_ERROR, 0, 1, 0) + b"\0\0\0\0"))
    with pytest.raises(rtnl.WireError):
        rtnl.link_of(b"\0" * 8)
