"""A VM's secondary NICs (multus networks), made real in its pod: each a veth from the node's bridge
(a Linux bridge, or an Open vSwitch bridge's port) bound to the guest by the bridge binding. Where
virtbus gave the address, the launcher's DHCP server hands it out; on a layer-2 network (no address)
the segment's own server does, and the launcher learns the address from its ACK (launcher.dhcp_snoop)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

import structlog

from launcher import podnic
from launcher.dhcp_packet import Lease
from proto.state import VMIInterface
from servicekit.ovs import Ovs, OvsError

log = structlog.get_logger()


@dataclass(frozen=True)
class SecondaryArg:
    """The handler's ``--secondary interface=bridge=address/prefix[=type=vlan]`` (no address: layer 2)."""

    interface: str
    bridge: str
    address: str
    kind: str = "bridge"
    vlan: int | None = None

    @classmethod
    def parse(cls, item: str) -> SecondaryArg:
        name, bridge, address, kind, vlan = (item.split("=") + ["bridge", ""])[:5]
        return cls(name, bridge, address, kind or "bridge", int(vlan) if vlan else None)


@dataclass(frozen=True)
class Plumbed:
    status: VMIInterface
    lease: tuple[Lease, str] | None  # (lease, guest bridge) for the launcher's DHCP server
    snoop: str | None  # the pod's NIC to learn a layer-2 lease on


def plumb(*, vmi: str, index: int, arg: SecondaryArg, mac: str, tap: str, pod_netns: str, node_netns: str | None,
          ovs_db: str | None) -> Plumbed:
    """Blocking: the NIC's veth, its port on the node's bridge and its binding in the pod."""
    if arg.kind == "ovs" and ovs_db is None:
        raise RuntimeError(f"interface {arg.interface} is on Open vSwitch bridge {arg.bridge}, and this node runs none")
    ovs = Ovs(ovs_db) if arg.kind == "ovs" and ovs_db else None
    nic = podnic.plumb_secondary(vmi=vmi, index=index, pod_netns=pod_netns, node_netns=node_netns,
                                 node_bridge=arg.bridge, ovs=ovs, vlan=arg.vlan)
    if not arg.address:  # layer 2: the segment's DHCP server answers; its ACK tells the status
        podnic.bind_bridge(pod_netns=pod_netns, tap=tap, pod_ip=None, nic=nic)
        return Plumbed(VMIInterface(name=arg.interface, mac=mac), None, nic)
    ip = IPv4Interface(arg.address)
    guest_bridge = podnic.bind_bridge(pod_netns=pod_netns, tap=tap, pod_ip=ip, nic=nic)
    lease = Lease(mac=mac, ip=ip.ip, prefix=ip.network.prefixlen, router=None, dns=[], mtu=None, routes=[],
                  hostname=None, lease_seconds=86400, server_id=IPv4Address(podnic.DHCP_SERVER_ADDRESS), domain=None)
    status = VMIInterface(name=arg.interface, ip_address=str(ip.ip), ip_addresses=[str(ip.ip)], mac=mac)
    return Plumbed(status, (lease, guest_bridge), None)


def unplug_ovs(vmi: str, args: tuple[str, ...], ovs_db: str | None) -> None:
    """Blocking: the OVS ports of the VM's NICs go with their veths (OVS keeps a port whose link is gone)."""
    for index, item in enumerate(args, start=1):
        if SecondaryArg.parse(item).kind == "ovs" and ovs_db:
            try:
                Ovs(ovs_db).del_port(podnic.secondary_host_side(vmi, index))
            except OvsError as exc:
                log.warning("ovs port not removed", error=str(exc))
