"""The pure composers of nft rules, routes and bridges check their inputs once more, where they
become text: a value that slipped past every other check still never becomes a rule or a route."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import msgspec
import pytest

from handler.floatingips import compose_fips, plan_fips
from handler.nodeports import compose_nodeports
from handler.podnet import pod_routes
from proto.errors import ApiError, Code
from proto.netcheck import check_bridge, check_ovs_bridge
from proto.spec import NetworkAttachment
from proto.state import Exposure, FloatingIP, Node

POD = {"a": IPv4Address("10.244.0.2")}


@pytest.mark.parametrize("change", [
    {"protocol": "tcp dport 1 accept; flush ruleset"}, {"protocol": "TCP\n"}, {"protocol": "SCTP"},
    {"port": 0}, {"port": 65536}, {"port": True}, {"node_port": 22}, {"node_port": 40000},
], ids=repr)
def test_node_ports_refuse_what_is_not_a_port_or_protocol(change: dict[str, Any]) -> None:
    exposure = msgspec.structs.replace(Exposure(vm="a", port=80, node_port=30080), **change)
    with pytest.raises(ApiError) as info:
        compose_nodeports([exposure], POD)
    assert info.value.code is Code.INVALID


def test_node_ports_refuse_a_pod_ip_that_is_not_an_address() -> None:
    with pytest.raises(ApiError):
        compose_nodeports([Exposure(vm="a", port=80, node_port=30080)],
                          {"a": "10.244.0.2:1 accept; flush ruleset"})  # type: ignore[dict-item]


@pytest.mark.parametrize("mapped", [
    ("192.168.200.10; flush ruleset", "10.244.0.2", "multus-bridge"),
    ("192.168.200.10", "10.244.0.2 accept", "multus-bridge"),
    ("192.168.200.10", "10.244.0.2", 'x" accept; flush ruleset; "'),
    ("192.168.200.10", "10.244.0.2", "-bridge"),
    ("127.0.0.1", "10.244.0.2", "multus-bridge"),
], ids=repr)
def test_floating_ips_refuse_what_is_not_an_address_or_a_bridge(mapped: tuple[str, str, str]) -> None:
    with pytest.raises(ApiError):
        compose_fips([mapped])


def node(name: str, cidr: str | None, address: str | None) -> Node:
    return Node(name=name, cpus=1, memory=1, kvm=False, heartbeat=0.0, started_at=0.0, pod_cidr=cidr, address=address)


def test_pod_routes_only_to_other_nodes_pod_networks_via_host_addresses() -> None:
    nodes = [node("me", "10.244.0.0/24", "10.99.0.1"), node("n2", "10.244.1.0/24", "10.99.0.2"),
             node("evil1", "default", "10.99.0.3"), node("evil2", "0.0.0.0/0", "10.99.0.4"),
             node("evil3", "10.99.0.0/24", "10.99.0.5"), node("evil4", "10.244.2.0/24", "127.0.0.1"),
             node("evil5", "10.244.0.0/24", "10.99.0.6"),  # claims my CIDR
             node("evil6", "10.244.1.0/24", "10.99.0.7"),  # claims n2's
             node("evil7", "10.244.3.0/24", "10.244.1.7"),  # via an address in the pod network
             node("evil8", "10.244.4.0/24", "10.99.0.8 dev lo")]
    assert pod_routes(nodes, "me", IPv4Network("10.244.0.0/24")) == {
        IPv4Network("10.244.1.0/24"): IPv4Address("10.99.0.2")}


def test_a_secondary_network_only_on_bridges_the_node_allows() -> None:
    allowed = frozenset({"multus-bridge"})
    check_bridge("n", "multus-bridge", allowed)
    for bridge in ("eth0", "vbpods", "br0"):
        with pytest.raises(ApiError) as info:
            check_bridge("n", bridge, allowed)
        assert "does not allow" in info.value.message and "multus-bridge" in info.value.message
    with pytest.raises(ApiError):
        check_bridge("n", "vbpods", frozenset({"vbpods"}))


def test_an_ovs_network_only_where_its_bridge_is() -> None:
    check_ovs_bridge("ovs-net-br1", "br1", ["br0", "br1"])
    with pytest.raises(ApiError) as info:
        check_ovs_bridge("ovs-net-br1", "br1", ["br0"])
    assert (info.value.code, info.value.field) == (Code.INVALID, "spec.bridge")
    assert "does not have" in info.value.message and "br0" in info.value.message
    with pytest.raises(ApiError) as info:
        check_ovs_bridge("ovs-net-br1", "br1", [])
    assert "no Open vSwitch here" in info.value.message


def test_floating_ips_only_on_allowed_bridges_and_subnets_off_node_addresses() -> None:
    nets = {"provider": NetworkAttachment(name="provider", bridge="multus-bridge", subnet="192.168.200.0/24"),
            "uplink": NetworkAttachment(name="uplink", bridge="eth0", subnet="192.168.7.0/24"),
            "nodes": NetworkAttachment(name="nodes", bridge="multus-bridge", subnet="10.99.0.0/24")}
    fips = [FloatingIP(address="192.168.200.10", network="provider", vm="a"),
            FloatingIP(address="192.168.7.10", network="uplink", vm="a"),
            FloatingIP(address="10.99.0.200", network="nodes", vm="a"),
            FloatingIP(address="192.168.200.11", network="provider", vm="elsewhere"),
            FloatingIP(address="192.168.200.12", network="provider")]
    mapped = plan_fips(fips, {"a": "10.244.0.2"}, nets, frozenset({"multus-bridge"}), [IPv4Address("10.99.0.1")])
    assert mapped == [("192.168.200.10", "10.244.0.2", "multus-bridge", "192.168.200.0/24")]
