from ipaddress import IPv4Address, IPv4Network

import pytest

from proto.ipam import NODE_NETWORKS, Exhausted, gateway, node_cidr


def test_node_cidrs_do_not_overlap() -> None:
    cidrs = [node_cidr(i) for i in range(5)]
    assert cidrs[0] == IPv4Network("10.244.0.0/24") and cidrs[4] == IPv4Network("10.244.4.0/24")
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
    # a thousand nodes fit: past 10.244.255.0/24 the next is 10.245.0.0/24, the last 10.247.255.0/24
    assert node_cidr(256) == IPv4Network("10.245.0.0/24") and node_cidr(1023) == IPv4Network("10.247.255.0/24")
    assert NODE_NETWORKS == 1024
    with pytest.raises(Exhausted):
        node_cidr(1024)


def test_the_gateway_is_the_first_host() -> None:
    assert gateway(IPv4Network("10.244.3.0/24")) == IPv4Address("10.244.3.1")


def test_secondary_pool_respects_range_and_gateway() -> None:
    from proto.ipam import secondary_pool as pool
    from proto.spec import NetworkAttachment

    seed = NetworkAttachment(name="multus-br", bridge="multus-bridge", subnet="192.168.100.0/24")
    addresses = pool(seed)
    assert addresses[0] == IPv4Address("192.168.100.2") and addresses[-1] == IPv4Address("192.168.100.254")
    assert IPv4Address("192.168.100.1") not in addresses  # the provider's gateway
    ranged = NetworkAttachment(name="n", bridge="b", subnet="10.9.0.0/24", gateway="10.9.0.10",
                               range_start="10.9.0.9", range_end="10.9.0.11")
    assert pool(ranged) == [IPv4Address("10.9.0.9"), IPv4Address("10.9.0.11")]
