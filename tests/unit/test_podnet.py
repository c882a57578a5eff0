"""The node's side of the pod network against a fake netlink: the pod bridge, and routes to the other
nodes' pods kept in step with the nodes, each change made once."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from handler.podnet import POD_BRIDGE, PodNetwork
from proto.state import Node
from servicekit.fake_netlink import FakeNetlink, FakeRoute
from servicekit.netlink import KernelNetlink
from servicekit.store import Store


def node(name: str, cidr: str, address: str) -> Node:
    return Node(name=name, cpus=1, memory=2**30, kvm=False, heartbeat=0.0, started_at=0.0, address=address,
                pod_cidr=cidr)


@pytest.fixture
def netlink() -> FakeNetlink:
    fake = FakeNetlink()
    fake.add_link("eth0", "10.99.0.11/24")  # the node network
    return fake


@pytest.fixture
def podnet(offline_store: Store, netlink: FakeNetlink) -> PodNetwork:
    return PodNetwork(offline_store, "node1", "vbtest-node1", IPv4Network("10.244.0.0/24"), netlink)


def via(address: str) -> FakeRoute:
    return FakeRoute(IPv4Address(address), "eth0")


def test_the_pod_bridge_holds_the_gateway_and_the_node_forwards(podnet: PodNetwork, netlink: FakeNetlink,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **_: ran.append(cmd))
    podnet.set_up_bridge()
    podnet.set_up_bridge()  # a restarted handler: nothing to do twice
    bridge = netlink.links[POD_BRIDGE]
    assert (bridge.kind, bridge.up, bridge.addresses) == ("bridge", True, [IPv4Interface("10.244.0.1/24")])
    assert netlink.history == [f"link add {POD_BRIDGE} type bridge", f"link set {POD_BRIDGE} up",
                               f"addr replace 10.244.0.1/24 dev {POD_BRIDGE}",
                               f"route replace 10.96.0.0/16 dev {POD_BRIDGE}"]  # Services' virtual IPs
    assert ran[0] == ["ip", "netns", "exec", "vbtest-node1", "sysctl", "-qw", "net.ipv4.ip_forward=1"]


def test_routes_follow_the_other_nodes(podnet: PodNetwork, netlink: FakeNetlink) -> None:
    me, two, three = (node("node1", "10.244.0.0/24", "10.99.0.11"), node("node2", "10.244.1.0/24", "10.99.0.12"),
                      node("node3", "10.244.2.0/24", "10.99.0.13"))
    podnet.sync_routes([me, two, three])
    assert netlink.routes == {IPv4Network("10.244.1.0/24"): via("10.99.0.12"),
                              IPv4Network("10.244.2.0/24"): via("10.99.0.13")}
    made = len(netlink.history)
    for _ in range(3):  # heartbeats: the same nodes again change nothing in the kernel
        podnet.sync_routes([me, two, three])
    assert len(netlink.history) == made
    moved = node("node3", "10.244.2.0/24", "10.99.0.23")
    podnet.sync_routes([two, moved])  # node3 came back with another address
    assert netlink.routes[IPv4Network("10.244.2.0/24")] == via("10.99.0.23")
    podnet.sync_routes([moved])  # node2 left
    assert netlink.routes == {IPv4Network("10.244.2.0/24"): via("10.99.0.23")}
    assert netlink.history[made:] == ["route replace 10.244.2.0/24 via 10.99.0.23", "route del 10.244.1.0/24"]


def test_a_node_out_of_reach_costs_only_its_own_route_and_is_tried_again(podnet: PodNetwork,
                                                                         netlink: FakeNetlink) -> None:
    far, near = node("node2", "10.244.1.0/24", "192.0.2.12"), node("node3", "10.244.2.0/24", "10.99.0.13")
    podnet.sync_routes([far, near])  # 192.0.2.12 is on no network of this node: the kernel refuses
    assert netlink.routes == {IPv4Network("10.244.2.0/24"): via("10.99.0.13")}
    netlink.add_link("eth1", "192.0.2.1/24")  # the operator wires the node up
    podnet.sync_routes([far, near])  # its next heartbeat
    assert netlink.routes[IPv4Network("10.244.1.0/24")] == FakeRoute(IPv4Address("192.0.2.12"), "eth1")


def test_a_route_someone_else_removed_is_no_failure(podnet: PodNetwork, netlink: FakeNetlink) -> None:
    two = node("node2", "10.244.1.0/24", "10.99.0.12")
    podnet.sync_routes([two])
    netlink.routes.clear()  # flushed behind the agent's back
    podnet.sync_routes([])
    assert netlink.history[-1] == "route replace 10.244.1.0/24 via 10.99.0.12"  # no delete took effect, none raised
    podnet.sync_routes([two])  # and when the node is back, its route is made again
    assert netlink.routes == {IPv4Network("10.244.1.0/24"): via("10.99.0.12")}


def test_forgetting_a_neighbour_drops_only_that_entry(podnet: PodNetwork, netlink: FakeNetlink,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    podnet.forget_neighbor(IPv4Address("10.244.0.5"))  # no bridge yet: nothing to forget, nothing raised
    monkeypatch.setattr(subprocess, "run", lambda *_, **__: None)
    podnet.set_up_bridge()
    netlink.neighbours |= {(POD_BRIDGE, IPv4Address("10.244.0.5")), (POD_BRIDGE, IPv4Address("10.244.0.6"))}
    podnet.forget_neighbor(IPv4Address("10.244.0.5"))
    assert netlink.neighbours == {(POD_BRIDGE, IPv4Address("10.244.0.6"))}


def test_the_real_adapter_is_the_default(offline_store: Store) -> None:
    podnet = PodNetwork(offline_store, "node1", "vbtest-node1", IPv4Network("10.244.0.0/24"))
    assert isinstance(podnet.netlink, KernelNetlink) and podnet.netlink.netns == "vbtest-node1"
