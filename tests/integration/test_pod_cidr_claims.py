"""Routes go only to pod CIDRs the control plane's claims give a node; a claim seen once is not read
again on every heartbeat."""

from __future__ import annotations

import time
from ipaddress import IPv4Network
from typing import Any

import pytest

from handler.podnet import PodNetwork
from proto import subjects
from proto.state import Node
from servicekit.fake_netlink import FakeNetlink
from servicekit.store import Store

pytestmark = pytest.mark.integration


def node(name: str, cidr: str) -> Node:
    return Node(name=name, cpus=1, memory=2**30, kvm=False, heartbeat=time.time(), started_at=0.0,
                address="10.99.0.12", pod_cidr=cidr)


async def test_only_claimed_cidrs_and_each_claim_read_once(store: Store) -> None:
    claims = store.bucket(subjects.BUCKET_IPAM, str)
    await claims.create("nodecidr.1", "node2")
    await claims.create("nodecidr.2", "node3")
    podnet = PodNetwork(store, "node1", None, IPv4Network("10.244.0.0/24"), FakeNetlink())
    reads: list[str] = []
    real_get = podnet.cidrs.get

    async def counted_get(key: str) -> Any:
        reads.append(key)
        return await real_get(key)

    podnet.cidrs.get = counted_get  # type: ignore[method-assign]
    honest, liar = node("node2", "10.244.1.0/24"), node("evil", "10.244.2.0/24")  # node3's CIDR
    for _ in range(3):  # three heartbeats' worth of node changes
        assert [n.name for n in await podnet.claimed([honest, liar])] == ["node2"]
    assert reads.count("nodecidr.1") == 1  # confirmed once, then known
    assert reads.count("nodecidr.2") == 3  # a refused claim is read again: it may be given later
