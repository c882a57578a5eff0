"""Secondary networks (the multus case) on this node: the NAD's host bridge, and each VM's address
on it, unique across the whole cluster (one CAS-updated table per network, unlike host-local IPAM
per node) and kept by the VM wherever it runs."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Network

from handler.claims import claim_address, release_address
from proto import netcheck, subjects
from proto.errors import ApiError, Code
from proto.spec import NetworkAttachment, VMSpec
from servicekit.store import Bucket, Store


def pool(att: NetworkAttachment) -> list[IPv4Address]:
    """Pure: the addresses VMs may get; the gateway (given, else the first host) is never one."""
    subnet = IPv4Network(att.subnet)
    gateway = IPv4Address(att.gateway) if att.gateway else subnet.network_address + 1
    low = IPv4Address(att.range_start) if att.range_start else subnet.network_address + 2
    high = IPv4Address(att.range_end) if att.range_end else subnet.broadcast_address - 1
    return [ip for ip in subnet.hosts() if low <= ip <= high and ip != gateway]


def check_bridge(att: NetworkAttachment, allowed: frozenset[str]) -> None:
    """Pure: a secondary network may use only a bridge the node's operator allowed, never the pod
    bridge or the node's uplink (which an operator does not list)."""
    if att.bridge not in allowed or att.bridge == netcheck.POD_BRIDGE:
        listed = ", ".join(sorted(allowed)) or "none"
        raise ApiError(Code.INVALID, f"network {att.name} uses bridge {att.bridge!r}, which this node does not "
                       f"allow (its --allowed-bridge: {listed})", "spec.bridge")


class SecondaryNetworks:
    def __init__(self, store: Store, netns: str | None, allowed_bridges: frozenset[str] = frozenset()) -> None:
        self.netns = netns
        self.allowed_bridges = allowed_bridges  # the node operator's --allowed-bridge
        self.networks: Bucket[NetworkAttachment] = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)
        self.tables: Bucket[dict[str, str]] = store.bucket(subjects.BUCKET_IPAM, dict[str, str])

    async def attachments(self, spec: VMSpec) -> list[tuple[str, NetworkAttachment, str]]:
        """(interface, network, address/prefix) for each multus NIC of the VM, allocating as needed."""
        out = []
        for net in spec.networks:
            if net.kind != "multus" or not net.network_name:
                continue
            entry = await self.networks.get(net.network_name)
            if entry is None:
                raise ApiError(Code.NOT_FOUND, f"network {net.network_name!r} does not exist")
            check_bridge(entry.value, self.allowed_bridges)
            ip = await self.address(entry.value, spec.name)
            out.append((net.name, entry.value, f"{ip}/{IPv4Network(entry.value.subnet).prefixlen}"))
        return out

    async def address(self, att: NetworkAttachment, vm: str) -> IPv4Address:
        return await claim_address(self.tables, f"net.{att.name}", vm, pool(att),
                                   f"network {att.name} has no free address left ({att.subnet})")

    async def release(self, vm: str) -> None:
        for entry in await self.networks.items():
            await release_address(self.tables, f"net.{entry.key}", vm)

    def ensure_bridge(self, bridge: str) -> None:
        """Like the bridge CNI plugin: the host bridge is made if it is not there."""
        if bridge not in self.allowed_bridges:
            raise ApiError(Code.INVALID, f"bridge {bridge!r} is not allowed on this node", "bridge")
        netcheck.ifname(bridge, "bridge")
        ip = ["ip", *(["-n", self.netns] if self.netns else [])]
        subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], capture_output=True, check=False)
        subprocess.run([*ip, "link", "set", bridge, "up"], capture_output=True, check=True)
