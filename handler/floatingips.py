"""Floating IPs on this node: for each one attached to a VM running here, the node answers for the
address on the network's host bridge and NATs it 1:1 to the VM's pod IP (DNAT in, SNAT out). When
the VM runs elsewhere, this node lets go, and the other node takes over: the address moves with it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import structlog

from handler import nodevmis
from proto import netcheck, subjects
from proto.errors import Code
from proto.spec import NetworkAttachment
from proto.state import FINAL_PHASES, Endpoints, FloatingIP
from servicekit import nftables
from servicekit.informer import shared
from servicekit.netlink import KernelNetlink, Netlink, NetlinkError
from servicekit.nftables import nat_table
from servicekit.resync import resync_on_changes
from servicekit.store import Bucket, Store

log = structlog.get_logger()
TABLE = "virtbus_fips"


def compose_fips(mapped: list[tuple[str, str, str]]) -> str:
    """Pure: (floating IP, pod IP, host bridge) -> the nft script of the 1:1 NAT. Each value is
    checked again here, where it becomes rule text (ApiError otherwise)."""
    for fip, pod, bridge in mapped:
        netcheck.host_address(fip, "address")
        netcheck.host_address(pod, "podIP")
        netcheck.ifname(bridge, "bridge")
    return nat_table(TABLE, {
        "prerouting": [f"ip daddr {fip} dnat to {pod}" for fip, pod, _ in mapped],
        "postrouting": [f'ip saddr {pod} oifname "{bridge}" snat to {fip}' for fip, pod, bridge in mapped],
    })


def plan_fips(fips: list[FloatingIP], pods: dict[str, str], nets: dict[str, NetworkAttachment],
              allowed: frozenset[str], node_addresses: list[IPv4Address],
              services_here: frozenset[str] = frozenset()) -> list[tuple[str, str | None, str, str]]:
    """Pure: (floating IP, pod IP, bridge, subnet) for each floating IP whose VM runs here, or (with no
    pod IP) each LoadBalancer address this node answers for (services_here; handler.servicerules leads
    its traffic to the endpoints), on a bridge this node allows and a subnet holding no node's address
    (its route would take that node's own traffic, the bus's included, into the bridge); the others
    are left out with a log line."""
    mapped: list[tuple[str, str | None, str, str]] = []
    for fip in fips:
        pod, net = pods.get(fip.vm or ""), nets.get(fip.network)
        if (not pod and fip.service not in services_here) or not net or net.subnet is None:
            continue
        subnet = IPv4Network(net.subnet)
        why = ("its bridge is not one this node allows" if net.bridge not in allowed else
               "its subnet holds a node's address" if any(a in subnet for a in node_addresses) else None)
        if why:
            log.warning("floating IP left out", address=fip.address, network=fip.network, reason=why)
            continue
        mapped.append((fip.address, pod or None, net.bridge, str(subnet)))
    return mapped


def answering_node(endpoints: Endpoints | None) -> str | None:
    """Pure: the node that answers for a LoadBalancer's address: the first (by name) that runs one of
    its endpoints, so the address moves only when that node stops running any (MetalLB's layer 2)."""
    nodes = sorted({a.node for s in (endpoints.subsets if endpoints else []) for a in s.addresses if a.node})
    return nodes[0] if nodes else None


class FloatingIPs:
    def __init__(self, store: Store, node: str, netns: str | None, allowed_bridges: frozenset[str],
                 netlink: Netlink | None = None) -> None:
        self.store = store
        self.node = node
        self.allowed_bridges = allowed_bridges
        self.netns = netns
        self.netlink: Netlink = netlink or KernelNetlink(netns)
        self.fips: Bucket[FloatingIP] = store.bucket(subjects.BUCKET_FLOATING_IPS, FloatingIP)
        self.networks: Bucket[NetworkAttachment] = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)
        self.endpoints: Bucket[Endpoints] = store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints)
        self.held: set[tuple[str, str]] = set()  # (address, bridge) this node answers for
        self.routes: set[tuple[str, str]] = set()
        self.rules = nftables.Applier(netns)  # the NAT rules, applied when they change

    async def run(self) -> None:
        """Recompute on any change of floating IPs or instances, forever."""
        await resync_on_changes([shared(self.store, self.fips).changes(),
                                 nodevmis.informer(self.store, self.node).changes(),
                                 shared(self.store, self.endpoints).changes()], self.sync,
                                "floating IPs")

    async def sync(self) -> None:
        # Every instance change here comes through: what it reads is the process's caches
        # (servicekit.informer), not a fresh read of four buckets on the server each time, which
        # was a third of a handler's CPU while its node started VMs.
        pods = {v.name: v.interfaces[0].ip_address for v in await nodevmis.vmis_here(self.store, self.node)
                if v.node_name == self.node and v.phase not in FINAL_PHASES and v.interfaces
                and v.interfaces[0].ip_address}
        nets = {e.key: e.value for e in await shared(self.store, self.networks).items()}
        nodes = [IPv4Address(e.value.address) for e in await shared(self.store, self.store.nodes).items()
                 if e.value.address]
        fips = [e.value for e in await shared(self.store, self.fips).items()]
        endpoints = {e.key: e.value for e in await shared(self.store, self.endpoints).items()}
        here = {f.service for f in fips
                if f.service is not None and answering_node(endpoints.get(f.service)) == self.node}
        mapped = plan_fips(fips, pods, nets, self.allowed_bridges, nodes, frozenset(here))
        want = {(f, b) for f, _, b, _ in mapped}
        want_routes = {(s, b) for _, _, b, s in mapped}
        await asyncio.to_thread(self._apply, [(f, p, b) for f, p, b, _ in mapped if p], want, want_routes)

    def _apply(self, mapped: list[tuple[str, str, str]], want: set[tuple[str, str]],
               want_routes: set[tuple[str, str]]) -> None:
        script = compose_fips(mapped)  # first: it refuses what must not reach netlink either
        for address, bridge in want - self.held:
            with _best_effort(done_already=Code.ALREADY_EXISTS):
                self.netlink.add_address(bridge, IPv4Interface(f"{address}/32"))
            # tell the segment the address moved here
            subprocess.run([*(["ip", "netns", "exec", self.netns] if self.netns else []), "arping", "-U", "-c", "1",
                            "-I", bridge, address], capture_output=True, check=False)
        for address, bridge in self.held - want:
            with _best_effort(done_already=Code.NOT_FOUND):
                self.netlink.delete_address(bridge, IPv4Interface(f"{address}/32"))
        for subnet, bridge in want_routes - self.routes:
            with _best_effort(done_already=None):
                self.netlink.replace_route(IPv4Network(subnet), link=bridge)
        for subnet, bridge in self.routes - want_routes:
            with _best_effort(done_already=Code.NOT_FOUND):
                self.netlink.delete_route(IPv4Network(subnet), link=bridge)
        self.rules.apply(script)
        if want != self.held:
            log.info("floating IPs", held=sorted(a for a, _ in want))
        self.held, self.routes = want, want_routes


@contextmanager
def _best_effort(*, done_already: Code | None) -> Iterator[None]:
    """One address or route change, its failure logged, not raised: one bridge's trouble must not
    keep the other floating IPs, nor the NAT, from being applied.
    ``done_already``: the code that says it was so before, which is no failure."""
    try:
        yield
    except NetlinkError as exc:
        if exc.code is not done_already:
            log.warning("floating IP address or route not changed", error=exc.message, retryable=exc.retryable)
