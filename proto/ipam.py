"""Pure address management: a pod CIDR per node out of the cluster CIDR, a pod IP per VM out of
its node's CIDR. The allocations themselves are stored by compare-and-set (see servicekit)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from proto.spec import NetworkAttachment

CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
NODE_PREFIX = 24


class Exhausted(Exception):
    pass


def node_cidr(index: int, cluster: IPv4Network = CLUSTER_CIDR, prefix: int = NODE_PREFIX) -> IPv4Network:
    subnets = list(cluster.subnets(new_prefix=prefix))
    if not 0 <= index < len(subnets):
        raise Exhausted(f"{cluster} has no room for a {len(subnets) + 1}th /{prefix} node network")
    return subnets[index]


def gateway(cidr: IPv4Network) -> IPv4Address:
    """The node's own address on its pod bridge: the first host."""
    return cidr.network_address + 1


def node_cidr_index(text: str | None, cluster: IPv4Network = CLUSTER_CIDR, prefix: int = NODE_PREFIX) -> int | None:
    """Pure: which node network of the cluster ``text`` is (None unless it is exactly one of them)."""
    try:
        cidr = IPv4Network(text or "")
    except ValueError:
        return None
    if cidr.prefixlen != prefix or not cidr.subnet_of(cluster):
        return None
    return (int(cidr.network_address) - int(cluster.network_address)) >> (32 - prefix)


def secondary_pool(att: NetworkAttachment) -> list[IPv4Address]:
    """The addresses VMs may get on a secondary network; the gateway (given, else the first host)
    is never one."""
    subnet = IPv4Network(att.subnet)
    gateway = IPv4Address(att.gateway) if att.gateway else subnet.network_address + 1
    low = IPv4Address(att.range_start) if att.range_start else subnet.network_address + 2
    high = IPv4Address(att.range_end) if att.range_end else subnet.broadcast_address - 1
    return [ip for ip in subnet.hosts() if low <= ip <= high and ip != gateway]
