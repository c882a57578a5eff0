"""A deleted VM's secondary addresses go back to their networks (NodeApi.release_secondary, which the
leader calls once a VM and its instance are gone), against a real nats-server: every network's
address given back, and no bucket read afresh for it."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from proto import subjects
from proto.spec import NetworkAttachment
from scheduler.nodeapi import NodeApi
from servicekit.claims import claim_address
from servicekit.store import Store
from tests.consumers import consumers_made

pytestmark = pytest.mark.integration


async def test_a_deleted_vms_addresses_go_back_to_every_network_without_a_bucket_read(store: Store) -> None:
    api = NodeApi(store)
    pools = {}
    for name, subnet in (("red", "192.168.10.0/28"), ("blue", "192.168.20.0/28")):
        await api.networks.put(name, NetworkAttachment(name=name, bridge=f"br-{name}", subnet=subnet))
        pools[name] = list(IPv4Network(subnet).hosts())[1:]
        for vm in ("keep", "gone-0", "gone-1", "gone-2"):
            await claim_address(api.tables, subjects.ipam_network(name), vm, pools[name], "full")
    await api.release_secondary("gone-0")  # the first: its cache of the networks starts
    async with consumers_made(store.nc) as made:
        await api.release_secondary("gone-1")
        await api.release_secondary("gone-2")
    for name in pools:
        table = await api.tables.require(subjects.ipam_network(name), "address table")
        assert sorted(table.value) == ["keep"], name  # every deleted VM's address back, the other kept
    assert made == [], f"consumers made to release addresses: {made}"
