"""The netlink adapter against the kernel, in a network namespace each test makes and removes (never
the host's): it does what ip(8) did, and refuses with the same errors as the fake the unit tests use.
The contract tests run against both."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from handler.podnet import POD_BRIDGE, PodNetwork
from launcher import namespaces, podnic
from launcher.masquerade import Masquerade
from proto.errors import Code
from proto.state import Node
from servicekit.fake_netlink import FakeNetlink
from servicekit.netlink import Address, KernelNetlink, Netlink, NetlinkError
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


def reaches(netns: str, address: str) -> bool:
    """A TCP connection from the namespace to a closed port: refused (a reset came back) only if the
    address is reached. (No ping on every host.)"""
    code = (f"import socket\ntry:\n    socket.create_connection(({address!r}, 9), timeout=3)\n"
            "except ConnectionRefusedError:\n    print('refused')\nexcept OSError:\n    pass")
    return in_netns(netns, sys.executable, "-c", code).strip() == "refused"


@pytest.fixture
def more_netns() -> Iterator[Callable[[], str]]:
    """Names for more namespaces of this test's own (vbtnl-...); each removed however the test ends,
    whoever made it (the adapter under test, or ``new_netns``)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8)")
    names: list[str] = []

    def name() -> str:
        names.append(f"vbtnl-{secrets.token_hex(4)}")
        return names[-1]

    try:
        yield name
    finally:
        for made in names:
            drop_netns(made)


def beside(adapter: Netlink, netns: str) -> Netlink:
    """The adapter of another namespace of the same host as ``adapter``."""
    return adapter.at(netns) if isinstance(adapter, FakeNetlink) else KernelNetlink(netns)


@pytest.fixture(params=["kernel", "fake"])
def adapter(request: pytest.FixtureRequest) -> Netlink:
    if request.param == "fake":
        return FakeNetlink()
    name: str = request.getfixturevalue("netns")
    return KernelNetlink(name)


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
    if isinstance(adapter, KernelNetlink):
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
    if isinstance(adapter, KernelNetlink):
        assert adapter.netns is not None
        assert "10.244.1.0" not in ip(adapter.netns, "route") and "192.168.200" not in ip(adapter.netns, "route")


def test_neighbours(adapter: Netlink) -> None:
    with refused(Code.NOT_FOUND):
        adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")
    adapter.ensure_bridge("vbtbr0")
    adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")  # nothing to forget is no failure
    if isinstance(adapter, KernelNetlink):
        assert adapter.netns is not None
        ip(adapter.netns, "neigh", "add", "10.244.0.5", "lladdr", "02:00:00:00:00:05", "dev", "vbtbr0", "nud", "stale")
        ip(adapter.netns, "neigh", "add", "10.244.0.6", "lladdr", "02:00:00:00:00:06", "dev", "vbtbr0", "nud", "stale")
        ip(adapter.netns, "neigh", "add", "10.244.0.7", "lladdr", "02:00:00:00:00:07", "dev", "vbtbr0",
           "nud", "permanent")
        adapter.flush_neighbours(IPv4Address("10.244.0.5"), "vbtbr0")
        adapter.flush_neighbours(IPv4Address("10.244.0.7"), "vbtbr0")  # set by hand: stays, as ip neigh flush
        left = ip(adapter.netns, "neigh", "show", "dev", "vbtbr0")
        assert "10.244.0.5 " not in left and "10.244.0.6 " in left and "10.244.0.7 " in left


def test_links_bridges_and_taps(adapter: Netlink) -> None:
    adapter.create_link("vbtbr0", "bridge")
    with refused(Code.ALREADY_EXISTS):
        adapter.create_link("vbtbr0", "bridge")
    adapter.create_tap("vbttap0")
    with refused(Code.ALREADY_EXISTS):
        adapter.create_tap("vbttap0")
    with refused(Code.ALREADY_EXISTS):  # a name held by another kind is taken as well
        adapter.create_tap("vbtbr0")
    with refused(Code.INVALID):  # not a port yet
        adapter.set_port("vbttap0", hairpin=True)
    with refused(Code.INVALID):  # a tap is no bridge
        adapter.set_master("vbtbr0", "vbttap0")
    with refused(Code.NOT_FOUND):
        adapter.set_master("vbttap0", "vbtnope")
    adapter.set_master("vbttap0", "vbtbr0")
    adapter.set_port("vbttap0", hairpin=True, learning=False)
    adapter.set_mac("vbttap0", "02:11:22:33:44:55")
    assert adapter.link_mac("vbttap0") == "02:11:22:33:44:55"
    with refused(Code.NOT_FOUND):  # a multicast address: EADDRNOTAVAIL
        adapter.set_mac("vbttap0", "01:00:5e:00:00:01")
    for link in ("vbttap0", "vbtbr0"):
        adapter.set_up(link)
    adapter.replace_address("vbtbr0", IPv4Interface("10.0.2.1/24"))
    adapter.replace_address("vbtbr0", IPv4Interface("169.254.75.10/32"))
    if isinstance(adapter, KernelNetlink):
        assert adapter.netns is not None
        tap = ip(adapter.netns, "-d", "link", "show", "vbttap0")
        assert "master vbtbr0" in tap and "hairpin on" in tap and "learning off" in tap and ",UP" in tap
        assert "tun type tap pi off vnet_hdr off persist on" in tap  # what `ip tuntap add ... mode tap` makes
        assert "link/ether 02:11:22:33:44:55" in tap
    adapter.flush_addresses("vbtbr0")
    assert [a for a in adapter.addresses() if a.link == "vbtbr0"] == []
    adapter.set_up("vbtbr0", False)
    if isinstance(adapter, KernelNetlink):
        assert adapter.netns is not None
        assert ",UP" not in ip(adapter.netns, "link", "show", "vbtbr0")
        assert "inet" not in ip(adapter.netns, "addr", "show", "dev", "vbtbr0")  # inet6 (link-local) too
    adapter.delete_link("vbtbr0")
    with refused(Code.NOT_FOUND):
        adapter.delete_link("vbtbr0")
    with refused(Code.NOT_FOUND):
        adapter.link_mac("vbtbr0")


def test_a_veth_into_another_namespace(adapter: Netlink, more_netns: Callable[[], str]) -> None:
    other = more_netns()
    adapter.create_netns(other)
    with refused(Code.ALREADY_EXISTS):
        adapter.create_netns(other)
    with refused(Code.NOT_FOUND):
        adapter.create_veth("vbteth0", "vbtpeer", f"{other}-missing")
    adapter.create_veth("vbteth0", "vbtpeer", other)
    with refused(Code.ALREADY_EXISTS):
        adapter.create_veth("vbteth0", "vbtpeer2", other)
    with refused(Code.ALREADY_EXISTS):  # the far name is taken there
        adapter.create_veth("vbteth1", "vbtpeer", other)
    there = beside(adapter, other)
    assert there.link_mac("vbtpeer") != adapter.link_mac("vbteth0")
    there.set_up("vbtpeer")
    there.replace_address("vbtpeer", IPv4Interface("10.244.0.1/24"))
    adapter.replace_address("vbteth0", IPv4Interface("10.244.0.5/24"))
    adapter.set_up("vbteth0")
    adapter.replace_route(IPv4Network("0.0.0.0/0"), via=IPv4Address("10.244.0.1"))
    if isinstance(adapter, KernelNetlink):
        assert adapter.netns is not None
        assert "default via 10.244.0.1 dev vbteth0" in ip(adapter.netns, "route")
        assert "vbtpeer" in ip(other, "link", "show") and "vbtpeer" not in ip(adapter.netns, "link", "show")
        assert reaches(adapter.netns, "10.244.0.1")  # the pair carries traffic
    adapter.delete_link("vbteth0")  # and takes its far end with it
    with refused(Code.NOT_FOUND):
        there.link_mac("vbtpeer")
    adapter.delete_netns(other)
    with refused(Code.NOT_FOUND):  # an adapter of a deleted namespace
        there.addresses()


def test_a_veth_into_the_callers_own_namespace(netns: str) -> None:
    """peer_netns=None: the launcher's case without a node namespace. Run from a process inside a
    second test namespace, so the caller's own is a test's too, never the host's."""
    caller = new_netns()
    try:
        code = ("from servicekit.netlink import KernelNetlink; "
                f"KernelNetlink({netns!r}).create_veth('vbteth0', 'vbtpeer', None)")
        in_netns(caller, sys.executable, "-c", code)
        assert "vbtpeer" in ip(caller, "link", "show")
        assert "vbteth0" in ip(netns, "link", "show")
    finally:
        drop_netns(caller)


def test_a_new_namespace_leaves_no_thread_and_no_child(more_netns: Callable[[], str]) -> None:
    """The launcher makes its namespace right before it unshares its mount namespace, which a process
    with threads may not do."""
    name = more_netns()
    home = os.stat("/proc/self/ns/net").st_ino
    KernelNetlink().create_netns(name)
    assert os.stat("/proc/thread-self/ns/net").st_ino == home  # made, and this thread came back
    assert os.stat(f"/run/netns/{name}").st_ino != home  # the name holds a namespace of its own
    KernelNetlink(name).set_up("lo")
    assert threading.active_count() == 1 and len(os.listdir("/proc/self/task")) == 1
    assert not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert "inet 127.0.0.1/8" in ip(name, "addr", "show", "lo")
    with refused(Code.ALREADY_EXISTS):
        KernelNetlink().create_netns(name)


async def test_a_namespace_made_from_a_worker_thread(more_netns: Callable[[], str]) -> None:
    """The handler makes namespaces from asyncio.to_thread: the worker comes back to the process's
    namespace (its later sockets are made there), and a half-made name is never left."""
    name = more_netns()
    home = os.stat("/proc/self/ns/net").st_ino

    def make() -> int:
        KernelNetlink().create_netns(name)
        return os.stat("/proc/thread-self/ns/net").st_ino

    assert await asyncio.to_thread(make) == home
    assert os.stat(f"/run/netns/{name}").st_ino != home
    with refused(Code.INVALID):  # a name that is a path: refused before anything is made
        await asyncio.to_thread(KernelNetlink().create_netns, f"{name}/x")
    assert not Path(f"/run/netns/{name}/x").exists()
    KernelNetlink().delete_netns(name)
    assert not Path(f"/run/netns/{name}").exists()
    with refused(Code.NOT_FOUND):
        KernelNetlink().delete_netns(name)


async def test_the_children_pyroute2_stops_never_signal_our_event_loop(netns: str) -> None:
    """pyroute2 stops each child it forks into the namespace with SIGTERM; a child that inherited the
    loop's signal handling would tell our loop it got SIGTERM (a launcher cancelled its own boot)."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: seen.append("SIGTERM"))
    try:
        for i in range(3):
            await asyncio.to_thread(KernelNetlink(netns).create_tap, f"vbttap{i}")
        for _ in range(20):
            await asyncio.to_thread(KernelNetlink(netns).set_up, "lo")
        await asyncio.sleep(0.2)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    assert seen == []


def test_the_launchers_pod_network_in_namespaces(more_netns: Callable[[], str]) -> None:
    """podnic against the kernel: the pod's and the node's namespaces are both this test's."""
    pod, node = more_netns(), more_netns()
    namespaces.create_netns(pod)
    namespaces.create_netns(node)
    KernelNetlink(node).ensure_bridge(podnic.NODE_POD_BRIDGE)
    KernelNetlink(node).replace_address(podnic.NODE_POD_BRIDGE, IPv4Interface("10.244.0.1/24"))
    KernelNetlink(node).ensure_bridge("vbtprov")
    pod_ip = IPv4Interface("10.244.0.5/24")
    for _ in range(2):  # a launcher run again finds it all there
        podnic.plumb_pod(vmi="vm1", pod_netns=pod, node_netns=node, pod_ip=pod_ip, gateway="10.244.0.1")
    assert "inet 10.244.0.5/24" in ip(pod, "addr", "show", "eth0")
    assert "default via 10.244.0.1 dev eth0" in ip(pod, "route")
    node_side = ip(node, "-d", "link", "show", podnic.host_side_name("vm1"))
    assert "master vbpods" in node_side and ",UP" in node_side and "hairpin on" in node_side
    assert reaches(pod, "10.244.0.1")
    mac = podnic.pod_mac(pod)
    assert f"link/ether {mac}" in ip(pod, "link", "show", "eth0")
    namespaces.create_tap(pod, "tap0")
    namespaces.create_tap(pod, "tap0")
    bridge = podnic.bind_bridge(pod_netns=pod, tap="tap0", pod_ip=pod_ip)
    for link in ("eth0", "tap0"):
        assert f"master {bridge}" in ip(pod, "link", "show", link)
    assert "inet " not in ip(pod, "addr", "show", "eth0") and mac not in ip(pod, "link", "show", "eth0")
    assert "learning off" in ip(pod, "-d", "link", "show", "eth0")
    assert "inet 169.254.75.10/32" in ip(pod, "addr", "show", bridge)
    nic = podnic.plumb_secondary(vmi="vm1", index=1, pod_netns=pod, node_netns=node, node_bridge="vbtprov")
    assert nic == "net1" and ",UP" in ip(pod, "link", "show", nic)
    assert "master vbtprov" in ip(node, "link", "show")
    namespaces.delete_netns(pod)
    namespaces.delete_netns(pod)
    assert not Path("/run/netns", pod).exists()
    # the veth goes with the pod once the kernel tears the namespace down (after its last user: a
    # socket of ours left open would keep it forever)
    deadline = time.monotonic() + 10
    while podnic.host_side_name("vm1") in ip(node, "link", "show") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert podnic.host_side_name("vm1") not in ip(node, "link", "show")


def test_a_restarted_vmis_pod_gets_its_veth_while_the_earlier_pods_namespace_lingers(
        more_netns: Callable[[], str]) -> None:
    """A VMI restarted on its node: the earlier pod's namespace is deleted by name, but something
    still holds it (here an open fd; in a restart, whatever the kernel has not yet let go of), so
    its veth's node end still has the name the new pod's wants."""
    pod, node = more_netns(), more_netns()
    namespaces.create_netns(pod)
    namespaces.create_netns(node)
    KernelNetlink(node).ensure_bridge(podnic.NODE_POD_BRIDGE)
    KernelNetlink(node).replace_address(podnic.NODE_POD_BRIDGE, IPv4Interface("10.244.0.1/24"))
    pod_ip = IPv4Interface("10.244.0.5/24")
    podnic.plumb_pod(vmi="vm1", pod_netns=pod, node_netns=node, pod_ip=pod_ip, gateway="10.244.0.1")
    held = os.open(Path("/run/netns", pod), os.O_RDONLY)
    try:
        namespaces.delete_netns(pod)
        assert podnic.host_side_name("vm1") in ip(node, "link", "show")  # the earlier pod's, lingering
        namespaces.create_netns(pod)
        podnic.plumb_pod(vmi="vm1", pod_netns=pod, node_netns=node, pod_ip=pod_ip, gateway="10.244.0.1")
    finally:
        os.close(held)
    assert "inet 10.244.0.5/24" in ip(pod, "addr", "show", "eth0")
    assert "master vbpods" in ip(node, "link", "show", podnic.host_side_name("vm1"))
    assert reaches(pod, "10.244.0.1")


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")
def test_the_masquerade_binding_in_a_namespace(more_netns: Callable[[], str]) -> None:
    pod, node = more_netns(), more_netns()
    namespaces.create_netns(pod)
    namespaces.create_netns(node)
    KernelNetlink(node).ensure_bridge(podnic.NODE_POD_BRIDGE)
    KernelNetlink(node).replace_address(podnic.NODE_POD_BRIDGE, IPv4Interface("10.244.0.1/24"))
    podnic.plumb_pod(vmi="vm1", pod_netns=pod, node_netns=node, pod_ip=IPv4Interface("10.244.0.5/24"),
                     gateway="10.244.0.1")
    namespaces.create_tap(pod, "tap0")
    podnic.bind_masquerade(pod_netns=pod, tap="tap0", rules=Masquerade(pod_ip=IPv4Address("10.244.0.5")))
    assert f"master {podnic.GUEST_BRIDGE}" in ip(pod, "link", "show", "tap0")
    assert "inet 10.0.2.1/24" in ip(pod, "addr", "show", podnic.GUEST_BRIDGE)
    assert in_netns(pod, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"


def test_a_missing_namespace_is_not_found_and_not_made(netns: str) -> None:
    missing = f"{netns}-missing"
    with refused(Code.NOT_FOUND):
        KernelNetlink(missing).addresses()
    with refused(Code.NOT_FOUND):
        KernelNetlink(missing).ensure_bridge("vbtbr0")
    assert not Path("/run/netns", missing).exists()  # pyroute2 would create it, were it asked to


def test_namespaces_pids_and_delete(netns: str) -> None:
    netlink = KernelNetlink()
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


@pytest.mark.parametrize("name", ["x" * 16, "a/b", "a\0b", ""])
def test_a_name_no_link_can_have_is_invalid_and_changes_nothing(netns: str, name: str) -> None:
    adapter = KernelNetlink(netns)
    before = ip(netns, "-o", "link", "show")
    attempts: list[Callable[[], object]] = [
        lambda: adapter.create_link(name, "bridge"), lambda: adapter.create_tap(name), lambda: adapter.set_up(name),
        lambda: adapter.create_veth(name, "vbtpeer0", None), lambda: adapter.set_master("lo", name),
        lambda: adapter.replace_address(name, IPv4Interface("10.0.0.1/24"))]
    for attempt in attempts:
        with refused(Code.INVALID):
            attempt()
    with refused(Code.INVALID):
        adapter.set_mac("lo", "02:00:00:00:00")  # five octets
    assert ip(netns, "-o", "link", "show") == before
