"""The guests' fence on this node: one nftables filter table (inet, so IPv6 too) in the node's
namespace, replaced whole. A guest reaches other pods, what was exposed (node ports, floating IPs,
its own included) and the world beyond the node network; it opens no connection to this node's
addresses (NATS, /metrics, ssh...) nor to the node network, other nodes' node ports excepted.

"From a guest" is: in by the pod bridge or a secondary network's host bridge (with br_netfilter,
bridged frames also come through the IP hooks with the bridge as their input interface), or from
a pod address (a guest of another node, arriving by the node network). Its own launcher's DHCP
and DNS answer inside the pod, never here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

import structlog

from proto import ipam, subjects
from proto.dnsconfig import CLUSTER_DNS_IP
from proto.spec import NetworkAttachment
from proto.state import Exposure, Node
from servicekit import nftables
from servicekit.informer import shared
from servicekit.netlink import Address, KernelNetlink, Netlink
from servicekit.nftables import filter_table
from servicekit.resync import resync_on_changes
from servicekit.store import Store

log = structlog.get_logger()
TABLE = "virtbus_fence"
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # what a Linux link may be called, and safe in nft


@dataclass(frozen=True)
class Fence:
    pod_bridge: str
    pod_cidr: IPv4Network
    management: tuple[IPv4Network, ...]  # the node network(s): nodes, NATS, whatever else sits there
    node_addresses: tuple[IPv4Address, ...] = ()  # every node's, wherever it is
    node_ports: tuple[tuple[str, int], ...] = ()  # (protocol, port) exposed anywhere in the cluster
    guest_bridges: tuple[str, ...] = ()  # secondary networks' host bridges
    cluster_cidr: IPv4Network = ipam.CLUSTER_CIDR


def _set(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def compose_fence(f: Fence) -> str:
    """Pure: the ``nft -f`` script of the fence."""
    for name in (f.pod_bridge, *f.guest_bridges):
        if not _IFNAME.fullmatch(name):  # it goes into the script between quotes
            raise ValueError(f"not an interface name: {name!r}")
    bridges = _set([f'"{b}"' for b in sorted({f.pod_bridge, *f.guest_bridges})])
    # nft refuses overlapping intervals in one set: a node's address inside the management network
    shut = [*f.management, *(IPv4Network(a) for a in f.node_addresses)]
    nets = _set([str(n) for n in collapse_addresses(shut)]) if shut else None
    nodes = _set([str(a) for a in sorted(set(f.node_addresses))]) if f.node_addresses else None
    to_node = [
        # ping the pod gateway: diagnosis, and bridge-bound guests' default route
        f"ip daddr {ipam.gateway(f.pod_cidr)} icmp type echo-request accept",
        # the cluster DNS this node answers (handler.clusterdns), the name server guests are offered
        f"ip daddr {CLUSTER_DNS_IP} meta l4proto {{ tcp, udp }} th dport 53 accept",
        "counter drop",
    ]
    onward = [f"ip daddr {f.cluster_cidr} accept"]  # other pods, on this node or another
    for proto in ("tcp", "udp") if nodes else ():
        ports = sorted({p for pr, p in f.node_ports if pr.lower() == proto})
        if ports:  # the other nodes' node ports (this node's are DNATed before they get here)
            onward.append(f"ip daddr {nodes} {proto} dport {_set([str(p) for p in ports])} accept")
    if nets:
        onward.append(f"ip daddr {nets} counter drop")
    # everything else (the provider network, the world) passes; IPv6 forwarding is the node's business
    return filter_table(TABLE, {
        "guest_to_node": to_node,
        "guest_onward": onward,
        "input": [
            "ct state established,related accept",
            'iifname "lo" accept',
            f"iifname {bridges} jump guest_to_node",
            f"ip saddr {f.cluster_cidr} jump guest_to_node",
        ],
        "forward": [
            "ct state established,related accept",
            "ct status dnat accept",  # node ports and floating IPs, a guest's own too (hairpin)
            f"iifname {bridges} jump guest_onward",
            f"ip saddr {f.cluster_cidr} jump guest_onward",
        ],
    })


def interface_network(addresses: list[Address], address: str) -> IPv4Network | None:
    """Pure: the network of ``address`` among a namespace's addresses, if it is there."""
    for a in addresses:
        if str(a.interface.ip) == address:
            return a.interface.network
    return None


def node_network(netns: str | None, address: str | None, netlink: Netlink | None = None) -> IPv4Network | None:
    """The management network: the node's address with its interface's prefix. Blocking; raises
    NetlinkError if the namespace's addresses cannot be read."""
    if address is None:
        return None
    return interface_network((netlink or KernelNetlink(netns)).addresses(), address)


class GuestFence:
    def __init__(self, store: Store, netns: str | None, pod_bridge: str, pod_cidr: IPv4Network,
                 management: IPv4Network | None) -> None:
        self.store = store
        self.netns = netns
        self.pod_bridge = pod_bridge
        self.pod_cidr = pod_cidr
        self.management = management
        # the process's informers (the node ports' and floating IPs' too): no watch or read of its own
        self.exposures = shared(store, store.bucket(subjects.BUCKET_EXPOSURES, Exposure))
        self.networks = shared(store, store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment))
        self.rules = nftables.Applier(netns)

    async def run(self) -> None:
        """Recompute on any change of exposures, networks or nodes, forever."""
        await resync_on_changes([self.exposures.changes(), self.networks.changes(), self._node_addresses()],
                                self.sync, "guest fence")

    async def _node_addresses(self) -> AsyncIterator[str]:
        """The nodes' changes that matter here: an address seen, changed or gone (not heartbeats)."""
        known: dict[str, str | None] = {}
        async for change in shared(self.store, self.store.nodes).changes():  # one watch with the agent's
            address = change.value.address if change.value is not None else None
            if change.key not in known or known[change.key] != address:
                known[change.key] = address
                yield change.key

    async def sync(self) -> None:
        """Compose and apply; raises if nft refuses (at start, the handler must not run guests unfenced)."""
        nodes: list[Node] = [e.value for e in await shared(self.store, self.store.nodes).items()]
        fence = Fence(
            pod_bridge=self.pod_bridge, pod_cidr=self.pod_cidr,
            management=(self.management,) if self.management else (),
            node_addresses=tuple(IPv4Address(n.address) for n in nodes if n.address and _is_v4(n.address)),
            node_ports=tuple((e.value.protocol, e.value.node_port) for e in await self.exposures.items()),
            guest_bridges=tuple(await self._bridges()))
        script = compose_fence(fence)
        if not await asyncio.to_thread(self.rules.apply, script):
            return
        log.info("guest fence applied", management=[str(n) for n in fence.management],
                 nodes=sorted(str(a) for a in fence.node_addresses),
                 node_ports=len(fence.node_ports), bridges=sorted({self.pod_bridge, *fence.guest_bridges}))

    async def _bridges(self) -> list[str]:
        out = []
        for entry in await self.networks.items():
            if _IFNAME.fullmatch(entry.value.bridge):
                out.append(entry.value.bridge)
            else:  # no link can have that name, so no guest sits on it; never let it into a rule
                log.warning("network with an impossible bridge name left out of the fence", network=entry.key)
        return out


def _is_v4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True
