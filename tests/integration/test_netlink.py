"""The netlink adapter against the kernel, in a network namespace each test makes and removes (never
the host's): it does what ip(8) did, and refuses with the same errors as the fake the unit tests use.
The contract tests run against both."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from handler.podnet import POD_BRIDGE, PodNetwork
from proto.errors import Code
from proto.state import Node
from servicekit.fake_netlink import FakeNetlink
from servicekit.netlink import Address, Netlink, NetlinkError, PyrouteNetlink
from servicekit.store import Store

pytestmark = pytest.mark.integration


def new_netns() -> str:
    name = f"vbtnl-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    return name


def drop_netns(name: str) -> None:
    if Path("/run/netns", name).exists():
        subprocess.run(["ip", "netns", "delete", name], check=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of this test's own; removed however the test ends."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8)")
    name = new_netns()
    try:
        yield name
    finally:
        drop_netns(name)


def ip(netns: str, *args: str) -> str:
    """ip(8) in the test's namespace: how the kernel's state is read back independently of the adapter."""
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, check=True).stdout


def in_netns(netns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, check=True).stdout


@pytest.fixture(params=["kernel", "fake"])
def adapter(request: pytest.FixtureRequest) -> Netlink:
    if request.param == "fake":
        return FakeNetlink()
    name: str = request.getfixturevalue("netns")
    return PyrouteNetlink(name)


def refused(code: Code) -> pytest.RaisesExc[NetlinkError]:
    return pytest.raises(NetlinkError, check=lambda exc: exc.code is code)


def test_bridges_and_addresses(adapter: Netlink) -> None:
    assert adapter.ensure_bridge("vbtbr0") is True
    assert adapter.ensure_bridge("vbtbr0") is False  # there already: brought up, not made again
    gateway = IPv4Interface("10.244.0.1/24")
    adapter.replace_address("vbtbr0", gateway)
    adapter.replace_address("vbtbr0", gateway)
    adapter.add_address("vbtbr0", IPv4Interface("192.168.200.10/32"))
    with refused(Code.ALREADY_EXISTS):
        adapter.add_address("vbtbr0", IPv4Interface("192.168.200.10/32"))
    with refused(Code.NOT_FOUND):
        adapter.add_address("vbtnope", IPv4Interface("192.168.200.11/32"))
    mine = [a for a in adapter.addresses() if a.link == "vbtbr0"]
    assert mine == [Address("vbtbr0", gateway), Address("vbtbr0", IPv4Interface("192.168.200.10/32"))]
    adapter.delete_address("vbtbr0", IPv4Interface("192.168.200.10/32"))
    with refused(Code.NOT_FOUND):
        adapter.delete_address("vbtbr0", IPv4Interface("192.168.200.10/32"))
    assert [a for a in adapter.addresses() if a.link == "vbtbr0"] == [Address("vbtbr0", gateway)]


def test_routes(adapter: Netlink) -> None:
    adapter.ensure_bridge("vbtbr0")
    adapter.replace_address("vbtbr0", IPv4Interface("10.99.0.11/24"))
    pods = IPv4Network("10.244.1.0/24")
    adapter.replace_route(pods, via=IPv4Address("10.99.0.12"))
    adapter.replace_route(pods, via=IPv4Address("10.99.0.13"))  # the node moved: replaced, not added
    with refused(Code.INVALID) as caught:  # a gateway on no network of ours: the same call fails again
        adapter.replace_route(IPv4Network("10.244.2.0/24"), via=IPv4Address("192.0.2.1"))
    assert not caught.value.retryable and "10.244.2.0/24 via 192.0.2.1" in caught.value.message
    fips = IPv4Network("192.168.200.0/24")
    adapter.replace_route(fips, link="vbtbr0")
    with refused(Code.NOT_FOUND):
        adapter.replace_route(fips, link="vbtnope")
    if isinstance(adapter, PyrouteNetlink):
        assert adapter.netns is not None
        routes = ip(adapter.netns, "route").splitlines()
        assert "10.244.1.0/24 via 10.99.0.13 dev vbtbr0" in [r.strip() for r in routes]
        assert "192.168.200.0/24 dev vbtbr0 scope link" in [r.strip() for r in routes]
    adapter.delete_route(pods)
    adapter.delete_route(fips, link="vbtbr0")
    with refused(Code.NOT_FOUND):
        adapter.delete_route(pods)
    with refused(Code.NOT_FOUND):
        adapter.delete_route(fips, link="vbtbr0")
    if isinstance(adapter, PyrouteNetlink):
        assert adapter.netns is not None
        assert "10.244.1.0" not in ip(adapter.netns, "route") and "192.168.200" not in ip(adapter.netns, "route")


def test_neighbours(adapter: Netlink) -> None:
    with refused(Code.NOT_FOUND):
        adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")
    adapter.ensure_bridge("vbtbr0")
    adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")  # nothing to forget is no failure
    if isinstance(adapter, PyrouteNetlink):
        assert adapter.netns is not None
        ip(adapter.netns, "neigh", "add", "10.244.0.5", "lladdr", "02:00:00:00:00:05", "dev", "vbtbr0", "nud", "stale")
        ip(adapter.netns, "neigh", "add", "10.244.0.6", "lladdr", "02:00:00:00:00:06", "dev", "vbtbr0", "nud", "stale")
        adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")
        left = ip(adapter.netns, "neigh", "show", "dev", "vbtbr0")
        assert "10.244.0.5 " not in left and "10.244.0.6 " in left


def test_a_missing_namespace_is_not_found_and_not_made(netns: str) -> None:
    missing = f"{netns}-missing"
    with refused(Code.NOT_FOUND):
        PyrouteNetlink(missing).addresses()
    with refused(Code.NOT_FOUND):
        PyrouteNetlink(missing).ensure_bridge("vbtbr0")
    assert not Path("/run/netns", missing).exists()  # pyroute2 would create it, were it asked to


def test_namespaces_pids_and_delete(netns: str) -> None:
    netlink = PyrouteNetlink()
    assert netlink.netns_pids(netns) == []
    inside = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "60"])
    try:
        deadline = 50
        while inside.pid not in netlink.netns_pids(netns) and deadline:  # ip(8) has not exec'd sleep yet
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)
        assert netlink.netns_pids(netns) == [inside.pid]
    finally:
        inside.kill()
        inside.wait()
    other = new_netns()
    try:
        netlink.delete_netns(other)
        assert not Path("/run/netns", other).exists()
        with refused(Code.NOT_FOUND):
            netlink.delete_netns(other)
        with refused(Code.NOT_FOUND):
            netlink.netns_pids(other)
    finally:
        drop_netns(other)


async def test_the_pod_network_in_a_namespace(store: Store, netns: str) -> None:
    """The handler's pod network, with the real adapter: bridge, gateway, forwarding, routes to the other
    nodes kept in step with them."""
    ip(netns, "link", "add", "vbteth0", "type", "bridge")  # the node network (no dummy module here)
    ip(netns, "addr", "add", "10.99.0.11/24", "dev", "vbteth0")
    ip(netns, "link", "set", "vbteth0", "up")
    podnet = PodNetwork(store, "node1", netns, IPv4Network("10.244.0.0/24"))
    # in a thread, as the handler calls it: pyroute2's blocking API runs an event loop of its own
    await asyncio.to_thread(podnet.set_up_bridge)
    await asyncio.to_thread(podnet.set_up_bridge)
    assert "inet 10.244.0.1/24" in ip(netns, "addr", "show", "dev", POD_BRIDGE)
    assert ",UP" in ip(netns, "link", "show", POD_BRIDGE)
    assert in_netns(netns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"

    def node(name: str, cidr: str, address: str) -> Node:
        return Node(name=name, cpus=1, memory=2**30, kvm=False, heartbeat=0.0, started_at=0.0, address=address,
                    pod_cidr=cidr)

    others = [node("node2", "10.244.1.0/24", "10.99.0.12"), node("node3", "10.244.2.0/24", "192.0.2.9")]
    await asyncio.to_thread(podnet.sync_routes, others)
    routes = ip(netns, "route")
    assert "10.244.1.0/24 via 10.99.0.12" in routes and "10.244.2.0/24" not in routes  # node3: no neighbour
    await asyncio.to_thread(podnet.sync_routes, [])
    assert "10.244.1.0/24" not in ip(netns, "route")
