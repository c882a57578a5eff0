"""Secondary networks (the multus case) on this node: the NAD's host bridge. Each VM's address on
it is given by the control plane (scheduler/nodeapi.py), unique in the cluster and kept by the VM;
this node checks the bridge again, as the reply came off the bus."""

from __future__ import annotations

import structlog

from proto import netcheck
from proto.errors import ApiError, Code
from servicekit.netlink import KernelNetlink, Netlink
from servicekit.ovs import Ovs, OvsError

log = structlog.get_logger()


class SecondaryNetworks:
    def __init__(self, netns: str | None, allowed_bridges: frozenset[str] = frozenset(),
                 netlink: Netlink | None = None, ovs_db: str | None = None) -> None:
        self.netns = netns
        self.ovs_db = ovs_db  # the node's Open vSwitch database (--ovs-db), if it has OVS
        self.allowed_bridges = allowed_bridges  # the node operator's --allowed-bridge
        self.netlink: Netlink = netlink or KernelNetlink(netns)

    def missing_ovs_bridge(self, network: str, bridge: str) -> str | None:
        """Why an ovs network cannot run here (no OVS, or not that bridge), else None. Blocking."""
        if self.ovs_db is None:
            return f"network {network} needs Open vSwitch bridge {bridge!r}; this node runs no Open vSwitch"
        try:
            found = Ovs(self.ovs_db).bridges()
        except OvsError as exc:
            return f"network {network} needs Open vSwitch bridge {bridge!r}; this node's OVS: {exc}"
        if bridge not in found:
            return (f"network {network} needs Open vSwitch bridge {bridge!r}, which this node does not have "
                    f"(its OVS bridges: {', '.join(found) or 'none'})")
        return None

    def ensure_bridge(self, bridge: str) -> None:
        """Like the bridge CNI plugin: the host bridge is made if it is not there. Blocking; raises
        NetlinkError if it cannot be brought up (the instance's reconcile is tried again)."""
        if bridge not in self.allowed_bridges or bridge == netcheck.POD_BRIDGE:
            raise ApiError(Code.INVALID, f"bridge {bridge!r} is not allowed on this node", "bridge")
        netcheck.ifname(bridge, "bridge")
        if self.netlink.ensure_bridge(bridge):
            log.info("secondary network bridge made", bridge=bridge)
