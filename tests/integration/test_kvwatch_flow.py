"""A watch keeps up with a burst larger than the server lets out unacknowledged: the server paces an
ordered consumer by flow control, and the watch answers each request as it comes (no poll)."""

from __future__ import annotations

import asyncio

import pytest

from proto.spec import VMSpec
from proto.state import VMI
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def test_a_burst_of_big_changes_all_arrive_in_order(store: Store) -> None:
    n = 1500
    padding = "x" * 8000  # ~8 KiB a value: 12 MB in all
    seen: list[int] = []

    async def watch() -> None:
        async for change in store.vmis.watch():
            if change.value is not None:
                seen.append(int(change.value.reason.split()[0]))
                await asyncio.sleep(0)  # a watcher that takes its time over each
                if len(seen) == n:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    for i in range(n):
        name = f"vm{i % 50}"
        await store.vmis.put(name, VMI(name=name, uid="u", spec=VMSpec(name=name, memory="64Mi"), created_at=0.0,
                                       reason=f"{i} {padding}"))
    await asyncio.wait_for(watcher, 60)
    assert seen == list(range(n))
