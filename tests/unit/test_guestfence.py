"""The guests' fence: what a guest may reach from the node, as one nftables filter table."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Network

import pytest

from handler.guestfence import Fence, compose_fence, node_network
from servicekit.fake_netlink import FakeNetlink

FENCE = Fence(pod_bridge="vbpods", pod_cidr=IPv4Network("10.244.1.0/24"),
              management=(IPv4Network("10.99.0.0/24"),),
              node_addresses=(IPv4Address("10.99.0.12"), IPv4Address("10.99.0.11"), IPv4Address("192.0.2.7")),
              node_ports=(("TCP", 30080), ("UDP", 30053), ("TCP", 30081)), guest_bridges=("multus-bridge",))


def chain(script: str, name: str) -> list[str]:
    lines = script.splitlines()
    start = lines.index(f"  chain {name} {{")
    return [line.strip() for line in lines[start + 1:lines.index("  }", start)]]


def nft_check(netns: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "-c", "-f", "-"], input=script, capture_output=True,
                          text=True, check=False)


def test_the_script_is_valid_nftables(scratch_netns: str) -> None:
    for fence in (FENCE, Fence(pod_bridge="vbpods", pod_cidr=IPv4Network("10.244.0.0/24"), management=())):
        done = nft_check(scratch_netns, compose_fence(fence))
        assert done.returncode == 0, done.stderr
    broken = compose_fence(FENCE).replace("counter drop", "counter dorp")
    assert nft_check(scratch_netns, broken).returncode != 0  # the check does refuse a bad script


def test_replaces_the_whole_inet_table_in_one_transaction() -> None:
    assert compose_fence(FENCE).splitlines()[:3] == [
        "table inet virtbus_fence", "delete table inet virtbus_fence", "table inet virtbus_fence {"]


def test_guests_open_nothing_on_the_node_itself() -> None:
    script = compose_fence(FENCE)
    assert chain(script, "input") == [
        "type filter hook input priority filter; policy accept;",
        "ct state established,related accept",  # answers to what the node opened
        'iifname "lo" accept',
        'iifname { "multus-bridge", "vbpods" } jump guest_to_node',  # this node's guests, bridged or routed
        "ip saddr 10.244.0.0/14 jump guest_to_node",  # other nodes' guests
    ]
    assert chain(script, "guest_to_node") == ["ip daddr 10.244.1.1 icmp type echo-request accept",
                                              # names: the cluster DNS, answered by the node
                                              "ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 accept",
                                              "counter drop"]


def test_guests_reach_pods_and_exposures_but_not_the_node_network() -> None:
    script = compose_fence(FENCE)
    assert chain(script, "forward")[1:] == [
        "ct state established,related accept",
        "ct status dnat accept",  # node ports and floating IPs, the guest's own included
        'iifname { "multus-bridge", "vbpods" } jump guest_onward',
        "ip saddr 10.244.0.0/14 jump guest_onward",
    ]
    assert chain(script, "guest_onward") == [
        "ip daddr 10.244.0.0/14 accept",
        # node ports toward the nodes, not toward whatever else shares their network
        "ip daddr { 10.99.0.11, 10.99.0.12, 192.0.2.7 } tcp dport { 30080, 30081 } accept",
        "ip daddr { 10.99.0.11, 10.99.0.12, 192.0.2.7 } udp dport 30053 accept",
        # the nodes' addresses inside the management network merge into it (nft refuses overlaps)
        "ip daddr { 10.99.0.0/24, 192.0.2.7/32 } counter drop",
    ]


def test_no_exposures_no_node_port_exception() -> None:
    script = compose_fence(Fence(pod_bridge="vbpods", pod_cidr=IPv4Network("10.244.3.0/24"),
                                 management=(IPv4Network("10.99.0.0/24"),),
                                 node_addresses=(IPv4Address("10.99.0.11"),)))
    assert chain(script, "guest_onward") == ["ip daddr 10.244.0.0/14 accept", "ip daddr 10.99.0.0/24 counter drop"]
    assert 'iifname "vbpods" jump guest_to_node' in chain(script, "input")
    assert "ip daddr 10.244.3.1 icmp type echo-request accept" in chain(script, "guest_to_node")


def test_management_network_from_the_nodes_interface() -> None:
    netlink = FakeNetlink()
    netlink.add_link("eth0", "10.99.0.11/24")
    netlink.add_link("vbpods", "10.244.3.1/24", kind="bridge")
    assert node_network(None, "10.99.0.11", netlink) == IPv4Network("10.99.0.0/24")
    assert node_network(None, "10.99.0.99", netlink) is None  # not this node's: no network to shut
    assert node_network(None, None, netlink) is None


def test_a_bridge_name_never_smuggles_nft_syntax_in() -> None:
    for bad in ('br0" accept; flush ruleset; "', "-x", "a" * 16, ""):
        with pytest.raises(ValueError, match="not an interface name"):
            compose_fence(Fence(pod_bridge="vbpods", pod_cidr=IPv4Network("10.244.1.0/24"), management=(),
                                guest_bridges=(bad,)))
