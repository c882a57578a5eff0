"""The launcher's pod plumbing against a fake host of namespaces: what a user would check with
``ip``: the pod's eth0 with its IP and a default route via the gateway, the node's end of the veth up
on the node's bridge, and each binding's guest bridge with the tap and the NIC as its ports."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from launcher import podnic
from launcher.masquerade import Masquerade
from proto.errors import Code
from servicekit import nftables
from servicekit.fake_netlink import FakeNetlink, FakeRoute
from servicekit.netlink import NetlinkError

POD_NS, NODE_NS = "vbtest-pod", "vbtest-node"
POD_IP = IPv4Interface("10.244.0.5/24")


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeNetlink:
    """The node's namespace (named, as in the lab) with its pod bridge, and an empty pod namespace with a tap."""
    root = FakeNetlink()
    for name in (POD_NS, NODE_NS):
        root.create_netns(name)
    root.at(NODE_NS).ensure_bridge(podnic.NODE_POD_BRIDGE)
    root.at(NODE_NS).replace_address(podnic.NODE_POD_BRIDGE, IPv4Interface("10.244.0.1/24"))
    root.at(POD_NS).create_tap("tap0")
    sysctls: list[tuple[str, ...]] = []
    monkeypatch.setattr(podnic, "sysctl", lambda netns, *settings: sysctls.append((netns, *settings)))
    return root


def plumb(host: FakeNetlink, node_netns: str | None = NODE_NS) -> None:
    podnic.plumb_pod(vmi="vm1", pod_netns=POD_NS, node_netns=node_netns, pod_ip=POD_IP, gateway="10.244.0.1",
                     netns_adapter=host.at)


def test_the_pod_gets_eth0_with_its_ip_and_a_default_route_via_the_gateway(host: FakeNetlink) -> None:
    plumb(host)
    pod = host.at(POD_NS)
    assert pod.links["eth0"].kind == "veth" and pod.links["eth0"].up
    assert pod.links["eth0"].addresses == [POD_IP]
    assert pod.routes[IPv4Network("0.0.0.0/0")] == FakeRoute(IPv4Address("10.244.0.1"), "eth0")
    assert pod.history[-4:] == [  # the order ip(8) was asked in
        f"link add eth0 type veth peer name {podnic.host_side_name('vm1')} netns vbtest-node",
        "addr replace 10.244.0.5/24 dev eth0", "link set eth0 up", "route replace 0.0.0.0/0 via 10.244.0.1"]


def test_the_node_side_of_the_veth_is_up_on_the_pod_bridge_with_hairpin(host: FakeNetlink) -> None:
    plumb(host)
    node_side = host.at(NODE_NS).links[podnic.host_side_name("vm1")]
    assert (node_side.kind, node_side.up, node_side.master, node_side.hairpin) == ("veth", True, "vbpods", True)
    assert podnic.host_side_name("vm1") not in host.links  # nothing in the caller's own namespace


def test_without_a_node_namespace_the_node_side_is_in_the_callers_own(host: FakeNetlink) -> None:
    host.ensure_bridge(podnic.NODE_POD_BRIDGE)
    plumb(host, node_netns=None)
    assert host.links[podnic.host_side_name("vm1")].master == "vbpods"


def test_plumbing_again_finds_the_veth_there(host: FakeNetlink) -> None:
    plumb(host)
    plumb(host)  # a launcher run again in the namespace it had set up: "File exists" is no failure
    assert host.at(POD_NS).links["eth0"].addresses == [POD_IP]


def test_a_restarted_vmis_pod_replaces_the_pair_its_earlier_pod_left_on_the_node(host: FakeNetlink) -> None:
    """The earlier pod's namespace is deleted by name, its veth still on the node (the kernel frees a
    namespace after its last user, asynchronously; the fake never does): the new pod gets a pair of
    its own, not a "File exists" taken for its own and then "No such device" for eth0."""
    plumb(host)
    host.delete_netns(POD_NS)
    host.create_netns(POD_NS)
    plumb(host)
    pod, node = host.at(POD_NS), host.at(NODE_NS)
    assert pod.links["eth0"].addresses == [POD_IP] and pod.links["eth0"].up
    node_side = node.links[podnic.host_side_name("vm1")]
    assert node_side.peer == (POD_NS, "eth0") and node_side.master == "vbpods" and node_side.up
    assert f"link del {podnic.host_side_name('vm1')}" in node.history


def test_a_restarted_vmis_secondary_nic_replaces_the_pair_its_earlier_pod_left(host: FakeNetlink) -> None:
    host.at(NODE_NS).ensure_bridge("br-provider")

    def secondary() -> str:
        return podnic.plumb_secondary(vmi="vm1", index=1, pod_netns=POD_NS, node_netns=NODE_NS,
                                      node_bridge="br-provider", netns_adapter=host.at)

    secondary()
    host.delete_netns(POD_NS)
    host.create_netns(POD_NS)
    nic = secondary()
    assert host.at(POD_NS).links[nic].up
    node_side = [link for link in host.at(NODE_NS).links.values() if link.master == "br-provider"]
    assert len(node_side) == 1 and node_side[0].up and node_side[0].peer == (POD_NS, "net1")


def test_a_missing_node_bridge_fails_the_plumbing(host: FakeNetlink) -> None:
    host.at(NODE_NS).delete_link(podnic.NODE_POD_BRIDGE)
    with pytest.raises(NetlinkError) as caught:
        plumb(host)
    assert caught.value.code is Code.NOT_FOUND and "master vbpods" in caught.value.message


def test_the_bridge_binding_puts_tap_and_nic_under_one_bridge(host: FakeNetlink) -> None:
    plumb(host)
    pod = host.at(POD_NS)
    pod_mac = podnic.pod_mac(POD_NS, netns_adapter=host.at)
    bridge = podnic.bind_bridge(pod_netns=POD_NS, tap="tap0", pod_ip=POD_IP, netns_adapter=host.at)
    assert bridge == "k6t-eth0" and pod.links[bridge].kind == "bridge"
    assert pod.links["eth0"].master == pod.links["tap0"].master == bridge
    assert all(pod.links[name].up for name in ("eth0", "tap0", bridge))
    assert pod.links["eth0"].addresses == [] and not pod.links["eth0"].learning
    assert pod.links["eth0"].mac != pod_mac  # the guest takes the pod's MAC; the port a random one
    assert pod.links[bridge].addresses == [IPv4Interface("169.254.75.10/32")]
    assert pod.links["eth0-nic"].addresses == [POD_IP]  # the dummy keeps the address for reference


def test_the_bridge_binding_goes_without_a_dummy_where_the_kernel_has_none(host: FakeNetlink) -> None:
    host.kinds = frozenset({"bridge"})
    plumb(host)
    podnic.bind_bridge(pod_netns=POD_NS, tap="tap0", pod_ip=POD_IP, netns_adapter=host.at)
    assert "eth0-nic" not in host.at(POD_NS).links
    assert host.at(POD_NS).links["tap0"].master == "k6t-eth0"


def test_the_masquerade_binding_puts_the_tap_under_the_gateway_bridge(host: FakeNetlink,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rulesets: list[tuple[str, str | None]] = []
    monkeypatch.setattr(nftables, "apply", lambda script, netns: rulesets.append((script, netns)))
    plumb(host)
    podnic.bind_masquerade(pod_netns=POD_NS, tap="tap0", rules=Masquerade(pod_ip=POD_IP.ip), netns_adapter=host.at)
    pod = host.at(POD_NS)
    assert pod.links["tap0"].master == podnic.GUEST_BRIDGE and pod.links["tap0"].up
    assert pod.links[podnic.GUEST_BRIDGE].addresses == [IPv4Interface("10.0.2.1/24")]
    assert pod.links["eth0"].addresses == [POD_IP]  # the pod keeps its IP: the guest is NATed behind it
    assert [netns for _, netns in rulesets] == [POD_NS]


def test_a_secondary_network_is_a_veth_from_the_nodes_bridge(host: FakeNetlink) -> None:
    host.at(NODE_NS).ensure_bridge("br-provider")
    nic = podnic.plumb_secondary(vmi="vm1", index=1, pod_netns=POD_NS, node_netns=NODE_NS, node_bridge="br-provider",
                                 netns_adapter=host.at)
    assert nic == "net1" and host.at(POD_NS).links[nic].up
    node_side = [link for link in host.at(NODE_NS).links.values() if link.master == "br-provider"]
    assert len(node_side) == 1 and node_side[0].up and node_side[0].peer == (POD_NS, "net1")


def test_a_bridge_networks_vlan_makes_the_nodes_end_an_access_port_before_it_is_up(host: FakeNetlink) -> None:
    node = host.at(NODE_NS)
    node.ensure_bridge("br-provider")
    podnic.plumb_secondary(vmi="vm1", index=1, pod_netns=POD_NS, node_netns=NODE_NS, node_bridge="br-provider",
                           netns_adapter=host.at, vlan=5)
    port = podnic.secondary_host_side("vm1", 1)
    assert node.links[port].access_vlan == 5 and node.links[port].up
    done = node.history
    assert done.index(f"vlan access port {port} vid 5") < done.index(f"link set {port} up")
    assert node.links["br-provider"].access_vlan is None  # the bridge itself is left as it was


def test_a_missing_pod_namespace_is_not_found(host: FakeNetlink) -> None:
    host.delete_netns(POD_NS)
    with pytest.raises(NetlinkError) as caught:
        plumb(host)
    assert caught.value.code is Code.NOT_FOUND
    assert podnic.host_side_name("vm1") not in host.at(NODE_NS).links  # nothing half made on the node
