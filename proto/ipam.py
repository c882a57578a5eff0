"""Pure address management: a pod CIDR per node out of the cluster CIDR, a pod IP per VM out of
its node's CIDR. The allocations themselves are stored by compare-and-set (see servicekit)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from proto.spec import NetworkAttachment

# 1,024 node networks of 254 pod addresses each: the /16 that Kubernetes' flannel default gives
# holds only 256 nodes, which a thousand-node cluster outgrows (as Kubernetes' large-cluster guide
# says of --cluster-cidr). Nodes that registered with a /24 of 10.244.0.0/16 keep it: it lies inside.
CLUSTER_CIDR = IPv4Network("10.244.0.0/14")
NODE_PREFIX = 24
NODE_NETWORKS = 1 << (NODE_PREFIX - CLUSTER_CIDR.prefixlen)


class Exhausted(Exception):
    pass


def node_cidr(index: int, cluster: IPv4Network = CLUSTER_CIDR, prefix: int = NODE_PREFIX) -> IPv4Network:
    count = 1 << (prefix - cluster.prefixlen)
    if not 0 <= index < count:
        raise Exhausted(f"{cluster} has no room for a {count + 1}th /{prefix} node network")
    return IPv4Network((int(cluster.network_address) + (index << (32 - prefix)), prefix))


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
