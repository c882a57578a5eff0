"""What a VM's secondary networks ask of a node, for placement: the Open vSwitch bridges of its ovs
networks, the Linux bridges of its bridge networks (which the node's operator must have allowed), and
VLAN access ports for a bridge network on a VLAN (a node without one of them refuses the VM;
scheduler.placement leaves it out)."""

from __future__ import annotations

from dataclasses import dataclass

from proto import subjects
from proto.spec import NetworkAttachment, VMSpec
from servicekit.store import Bucket, Store


@dataclass(frozen=True)
class NetworkNeeds:
    ovs_bridges: frozenset[str] = frozenset()
    bridges: frozenset[str] = frozenset()  # host bridges: each in the node's allowed_bridges
    vlan_ports: bool = False  # a bridge network with a vlan: the node makes VLAN access ports (its kernel can)


async def network_needs(store: Store, spec: VMSpec) -> NetworkNeeds:
    """The VM's networks' needs; a network not there (yet) asks nothing here: the node's attach
    reports that the VM cannot run."""
    names = spec.multus_networks
    if not names:
        return NetworkNeeds()
    networks = Bucket(store.raw[subjects.BUCKET_NETWORKS], NetworkAttachment)
    ovs, bridges, vlan_ports = set(), set(), False
    for name in names:
        entry = await networks.get(name)
        if entry is None:
            continue
        if entry.value.type == "ovs":
            ovs.add(entry.value.bridge)
            continue
        bridges.add(entry.value.bridge)
        vlan_ports = vlan_ports or entry.value.vlan is not None
    return NetworkNeeds(frozenset(ovs), frozenset(bridges), vlan_ports)
