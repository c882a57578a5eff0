"""Pure address management: a pod CIDR per node out of the cluster CIDR, a pod IP per VM out of
its node's CIDR. The allocations themselves are stored by compare-and-set (see servicekit)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

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
