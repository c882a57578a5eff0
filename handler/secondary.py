"""Secondary networks (the multus case) on this node: the NAD's host bridge. Each VM's address on
it is given by the control plane (scheduler/nodeapi.py), unique in the cluster and kept by the VM;
this node checks the bridge again, as the reply came off the bus."""

from __future__ import annotations

import structlog

from proto import netcheck
from proto.errors import ApiError, Code
from servicekit.netlink import Netlink, PyrouteNetlink

log = structlog.get_logger()


class SecondaryNetworks:
    def __init__(self, netns: str | None, allowed_bridges: frozenset[str] = frozenset(),
                 netlink: Netlink | None = None) -> None:
        self.netns = netns
        self.allowed_bridges = allowed_bridges  # the node operator's --allowed-bridge
        self.netlink: Netlink = netlink or PyrouteNetlink(netns)

    def ensure_bridge(self, bridge: str) -> None:
        """Like the bridge CNI plugin: the host bridge is made if it is not there. Blocking; raises
        NetlinkError if it cannot be brought up (the instance's reconcile is tried again)."""
        if bridge not in self.allowed_bridges or bridge == netcheck.POD_BRIDGE:
            raise ApiError(Code.INVALID, f"bridge {bridge!r} is not allowed on this node", "bridge")
        netcheck.ifname(bridge, "bridge")
        if self.netlink.ensure_bridge(bridge):
            log.info("secondary network bridge made", bridge=bridge)
