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
