"""Reading a whole bucket while its keys keep changing (a lane's VMIs, a node's record under load):
the read ends with every key's current value, rather than wait for a quiet moment that never comes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from proto.spec import VMSpec
from proto.state import VMI, Phase
from servicekit.store import Store

pytestmark = pytest.mark.integration


def vmi(name: str, phase: Phase = Phase.PENDING) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=phase)


async def churn(store: Store, names: list[str], stop: asyncio.Event) -> None:
    """Writes the keys over and over, pipelined, as fast as the server takes them."""
    n = 0
    while not stop.is_set():
        n += 1
        await asyncio.gather(*(store.vmis.put(name, vmi(name, Phase.SCHEDULED if n % 2 else Phase.PENDING))
                               for name in names))


async def test_a_whole_bucket_read_ends_while_its_keys_keep_changing(store: Store) -> None:
    quiet = [f"still-{i:03d}" for i in range(200)]
    busy = [f"busy-{i:02d}" for i in range(20)]
    for name in quiet + busy:
        await store.vmis.put(name, vmi(name))
    stop = asyncio.Event()
    writer = asyncio.create_task(churn(store, busy, stop))
    try:
        await asyncio.sleep(0.5)  # the writes are well under way
        for _ in range(3):
            read = await asyncio.wait_for(store.vmis.items(), 20)
            assert sorted(e.key for e in read) == sorted(quiet + busy)  # every key, each once
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
