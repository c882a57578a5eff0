"""A process that watches a bucket it writes (the scheduler's binds and status writes) gets its own
writes back as it wrote them, not decoded and validated a second time; anything written by others,
or by hand on the bus, is still decoded and checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proto.spec import VMSpec
from proto.state import VMI, Phase
from servicekit.store import Change, Store

pytestmark = pytest.mark.integration


def vmi(name: str, phase: Phase = Phase.PENDING) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=phase)


async def next_change(changes: AsyncIterator[Change[VMI] | None]) -> Change[VMI]:
    change = await asyncio.wait_for(anext(changes), 10)
    assert change is not None
    return change


async def test_own_writes_come_back_as_written_and_others_are_decoded(store: Store, nats_url: str) -> None:
    assert len(store.vmis.echoes) == 0
    await store.vmis.put("before", vmi("before"))
    assert len(store.vmis.echoes) == 0, "remembered with no watch to read it back"
    other = await Store.connect(nats_url, "other-writer")
    changes = store.vmis.updates("a")
    try:
        assert await asyncio.wait_for(anext(changes), 10) is None  # the watch is under way: no value yet
        mine = vmi("a")
        revision = await store.vmis.create("a", mine)
        change = await next_change(changes)
        assert change.revision == revision and change.value is mine  # no second decode
        assert len(store.vmis.echoes) == 0, "an echo read back is forgotten"

        theirs = vmi("a", Phase.SCHEDULED)
        revision = await other.vmis.update("a", theirs, revision)
        change = await next_change(changes)
        assert change.revision == revision and change.value == theirs and change.value is not theirs

        # by hand on the bus, at the key this process wrote last: decoded, found bad, read as gone
        await store.vmis.update("a", vmi("a", Phase.RUNNING), revision)
        assert (await next_change(changes)).value is not None
        await other.js.publish("$KV.vmis.a", b'{"name": "a", "uid": "../../etc"}')
        change = await next_change(changes)
        assert change.value is None
    finally:
        await changes.aclose()
        await other.close()
    assert store.vmis.echoes.watches == 0
    await store.vmis.put("after", vmi("after"))
    assert len(store.vmis.echoes) == 0
