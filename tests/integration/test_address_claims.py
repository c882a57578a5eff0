"""Address claims by CAS in JetStream: racing handlers never share an address; owners keep theirs."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network

import pytest

from proto import subjects
from proto.errors import ApiError, Code
from servicekit.claims import Table, claim_address, release_address
from servicekit.store import Bucket, Store

pytestmark = pytest.mark.integration


async def test_racing_claims_get_distinct_addresses_and_owners_keep_theirs(nats_url: str, store: Store) -> None:
    other = await Store.connect(nats_url, "other-handler")
    try:
        pool = list(IPv4Network("192.168.100.0/28").hosts())[1:]  # 13 addresses, .1 is the gateway
        buckets = [Bucket[Table](s.raw[subjects.BUCKET_IPAM], dict[str, str]) for s in (store, other)]
        owners = [f"vm{i}" for i in range(len(pool))]
        got = await asyncio.gather(*(claim_address(buckets[i % 2], "net.multus-br", o, pool, "full")
                                     for i, o in enumerate(owners)))
        assert sorted(got) == pool  # every address once, none twice
        assert await claim_address(buckets[1], "net.multus-br", "vm3", pool, "full") == got[3]
        with pytest.raises(ApiError) as err:
            await claim_address(buckets[0], "net.multus-br", "one-too-many", pool, "network multus-br is full")
        assert err.value.code is Code.UNAVAILABLE and "full" in err.value.message
        await release_address(buckets[0], "net.multus-br", "vm3")
        assert await claim_address(buckets[0], "net.multus-br", "newcomer", pool, "full") == got[3]
    finally:
        await other.close()


async def test_an_owner_whose_address_left_the_pool_gets_one_of_the_new_pool(store: Store) -> None:
    """A network applied again with another subnet: a VM's kept address of the old one is no use."""
    table = Bucket[Table](store.raw[subjects.BUCKET_IPAM], dict[str, str])
    old = list(IPv4Network("192.168.100.0/28").hosts())[1:]
    new = list(IPv4Network("192.168.110.0/28").hosts())[1:]
    kept = await claim_address(table, "net.moved", "vm1", old, "full")
    other = await claim_address(table, "net.moved", "vm2", new, "full")
    again = await claim_address(table, "net.moved", "vm1", new, "full")
    assert again in new and kept not in new and again != other
    assert (await table.require("net.moved", "table")).value == {"vm1": str(again), "vm2": str(other)}
