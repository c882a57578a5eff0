"""The node's side of the pod network (flannel host-gw style): a /24 of the cluster CIDR per
node and a stable pod IP per VM, both claimed by compare-and-set in the ``ipam`` bucket; a bridge
holding the node's gateway address in the node's namespace; routes to the other nodes' pod CIDRs
via their node addresses.
"""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import structlog

from proto import ipam, netcheck, services, subjects
from proto.errors import ApiError
from proto.state import Node
from servicekit.claims import claim_address, release_address
from servicekit.netlink import KernelNetlink, Netlink, NetlinkError
from servicekit.store import Bucket, Store

log = structlog.get_logger()
POD_BRIDGE = netcheck.POD_BRIDGE


class PodNetwork:
    def __init__(self, store: Store, node: str, netns: str | None, cidr: IPv4Network,
                 netlink: Netlink | None = None) -> None:
        self.node = node
        self.netns = netns
        self.netlink: Netlink = netlink or KernelNetlink(netns)
        self.ips: Bucket[dict[str, str]] = store.bucket(subjects.BUCKET_IPAM, dict[str, str])
        self.cidrs: Bucket[str] = store.bucket(subjects.BUCKET_IPAM, str)
        self.cidr: IPv4Network = netcheck.pod_cidr(str(cidr), "podCidr")  # as other nodes check it
        self._routes: dict[IPv4Network, IPv4Address] = {}  # what this agent put in the kernel
        self._claimed: set[tuple[str, str]] = set()  # (node, pod CIDR) the control plane's claims confirm
        self._refused: set[tuple[str, str]] = set()

    async def pod_ip(self, vm: str) -> IPv4Address:
        """The VM's pod IP on this node; the same one every time it runs here."""
        hosts = [ip for ip in self.cidr.hosts() if ip != ipam.gateway(self.cidr)]
        return await claim_address(self.ips, subjects.ipam_pod_ips(self.node), vm, hosts,
                                   f"no free pod IP left in {self.cidr} on {self.node}")

    async def release(self, vm: str) -> None:
        await release_address(self.ips, subjects.ipam_pod_ips(self.node), vm)

    async def claimed(self, nodes: list[Node]) -> list[Node]:
        """The nodes whose pod CIDR the control plane gave them (the ipam claims only it writes): a
        node's own record could name any CIDR, and a route to it would take another node's pods.
        Nodes change with every heartbeat: a claim once seen is not read again (a claim given back
        goes with its node's record, and one given again is another node's: a mark of its own), and a
        refused one is said once."""
        out = []
        for node in nodes:
            index = ipam.node_cidr_index(node.pod_cidr)
            if index is None:
                continue
            mark = (node.name, str(node.pod_cidr))
            if mark not in self._claimed:
                entry = await self.cidrs.get(subjects.ipam_node_cidr(index))
                if entry is None or entry.value != node.name:
                    if mark not in self._refused:
                        log.warning("node names a pod CIDR it was not given; no route to it", other=node.name,
                                    cidr=node.pod_cidr)
                        self._refused.add(mark)
                    continue
                self._claimed.add(mark)
            out.append(node)
        return out

    # --- the node's namespace (blocking: called in a thread) ------------------------------------
    def set_up_bridge(self) -> None:
        """The pod bridge, up, holding the gateway address; the node forwards. Raises NetlinkError."""
        self.netlink.ensure_bridge(POD_BRIDGE)
        self.netlink.replace_address(POD_BRIDGE, IPv4Interface(f"{ipam.gateway(self.cidr)}/{self.cidr.prefixlen}"))
        # The node's own connections to a Service's virtual IP need a route for connect() to get as far
        # as the NAT output hook, which leads them to an endpoint (handler.servicerules); one to an
        # address no Service holds goes nowhere beyond the pod bridge.
        self.netlink.replace_route(services.SERVICE_CIDR, link=POD_BRIDGE)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        subprocess.run([*prefix, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, capture_output=True)

    def forget_neighbor(self, ip: IPv4Address) -> None:
        """A new VM may hold an address a deleted one had, with another MAC: drop the node's old entry."""
        try:
            self.netlink.flush_neighbours(ip, POD_BRIDGE)
        except NetlinkError as exc:  # the entry would have aged out anyway; the VM starts regardless
            log.debug("neighbour not flushed", ip=str(ip), error=str(exc))

    def sync_routes(self, nodes: list[Node]) -> None:
        """Routes to every other node's pod CIDR via that node's address; stale ones go."""
        wanted = pod_routes(nodes, self.node, self.cidr)
        for cidr in set(self._routes) - set(wanted):
            try:
                self.netlink.delete_route(cidr)
            except NetlinkError as exc:  # already gone (someone flushed it): what we wanted
                log.debug("stale route not deleted", cidr=str(cidr), error=str(exc))
            del self._routes[cidr]
        for cidr, via in wanted.items():
            if self._routes.get(cidr) != via:
                # A well-formed address may still be no neighbour of ours: that node's route fails
                # (and is tried again on its next heartbeat), the others' and this watch go on.
                try:
                    self.netlink.replace_route(cidr, via=via)
                except NetlinkError as exc:
                    log.warning("no route to a node's pods", cidr=str(cidr), via=str(via), error=exc.message,
                                retryable=exc.retryable)
                    self._routes.pop(cidr, None)
                    continue
                self._routes[cidr] = via
                log.info("route to pods", cidr=str(cidr), via=str(via))


def pod_routes(nodes: list[Node], me: str, mine: IPv4Network | None) -> dict[IPv4Network, IPv4Address]:
    """Pure: the other nodes' pod CIDRs and the addresses to reach them by. Only a /24 of the cluster
    CIDR (never ``default``, never our own) via an IPv4 host address becomes a route; any other node
    record is left out with a log line, and one node's bad record costs only its own route."""
    out: dict[IPv4Network, IPv4Address] = {}
    for node in nodes:
        if node.name == me or not node.pod_cidr or not node.address:
            continue
        try:
            cidr = netcheck.pod_cidr(node.pod_cidr, "podCidr")
            via = netcheck.host_address(node.address, "address")
        except ApiError as exc:
            log.warning("no route to a node's pods", node=node.name, reason=str(exc))
            continue
        if cidr == mine or cidr in out or via in ipam.CLUSTER_CIDR:
            log.warning("no route to a node's pods", node=node.name, cidr=str(cidr), via=str(via),
                        reason="the CIDR is ours or taken, or the address is in the pod network")
            continue
        out[cidr] = via
    return out
