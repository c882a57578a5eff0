"""Node ports on this node: DNAT of node:N to podIP:P for the exposed VMs that run here, as one
nftables table in the node's namespace, replaced whole whenever exposures or instances change."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import structlog

from handler import nodevmis
from proto import netcheck, subjects
from proto.state import FINAL_PHASES, VMI, Exposure
from servicekit import nftables
from servicekit.informer import shared
from servicekit.nftables import nat_table
from servicekit.resync import resync_on_changes
from servicekit.store import Bucket, Store

log = structlog.get_logger()
TABLE = "virtbus_nodeports"
POD_BRIDGE = netcheck.POD_BRIDGE


def compose_nodeports(exposures: list[Exposure], pod_ips: dict[str, IPv4Address]) -> str:
    """Pure: the nft script for the exposures whose VM runs here (pod_ips: VM name -> pod IP).

    Every value is checked again right here, where it becomes rule text: whatever wrote the bucket,
    only TCP/UDP, ports in range and an IPv4 address get into the script (ApiError otherwise)."""
    rules = []
    for e in sorted(exposures, key=lambda e: (str(e.protocol), int(e.node_port))):
        ip = pod_ips.get(e.vm)
        if ip is not None:
            protocol = netcheck.protocol(e.protocol, "protocol").lower()
            rules.append(f"{protocol} dport {netcheck.node_port(e.node_port, 'nodePort')} "
                         f"dnat to {netcheck.ipv4(ip, 'podIP')}:{netcheck.port(e.port, 'port')}")
    local = [f"fib daddr type local {r}" for r in rules]
    return nat_table(TABLE, {
        "prerouting": local,
        "output": local,
        # Replies must come back through this node: a pod answering a client on its own node or
        # across the bridge (hairpin) would otherwise skip the reverse translation.
        "postrouting": [f'ct status dnat oifname "{POD_BRIDGE}" masquerade'],
    })


class NodePorts:
    def __init__(self, store: Store, node: str, netns: str | None) -> None:
        self.store = store
        self.node = node
        self.netns = netns
        self.bucket: Bucket[Exposure] = store.bucket(subjects.BUCKET_EXPOSURES, Exposure)
        self.rules = nftables.Applier(netns)

    async def run(self) -> None:
        """Recompute on any change of node ports or instances, forever."""
        await resync_on_changes([shared(self.store, self.bucket).changes(),
                                 nodevmis.informer(self.store, self.node).changes()], self.sync, "node ports")

    async def sync(self) -> None:
        # from the process's cache: this runs at every instance change here
        exposures = [e.value for e in await shared(self.store, self.bucket).items()]
        pod_ips = {v.name: IPv4Address(v.interfaces[0].ip_address) for v in
                   await nodevmis.vmis_here(self.store, self.node) if _runs_here(v, self.node)}
        script = compose_nodeports(exposures, pod_ips)
        if not await asyncio.to_thread(self.rules.apply, script):
            return
        log.info("node ports applied", count=script.count(" dnat to ") // 2)


def _runs_here(vmi: VMI, node: str) -> bool:
    return (vmi.node_name == node and vmi.phase not in FINAL_PHASES and bool(vmi.interfaces)
            and vmi.interfaces[0].ip_address is not None)
