"""A watch keeps up with a burst larger than the server lets out unacknowledged: the server paces an
ordered consumer by flow control, and the watch answers each request as it comes (no poll)."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import DeliverPolicy

from proto import subjects
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


async def test_after_the_current_values_the_watch_follows_changes_from_a_sequence(store: Store) -> None:
    """The current values come by a last-per-subject consumer; after them the watch goes on with a
    consumer of the changes from the next sequence (nats-server counts a last-per-subject consumer's
    pending by walking every key): each change still arrives once, in order, and one consumer is left."""
    def vmi(name: str, reason: str) -> VMI:
        return VMI(name=name, uid="u", spec=VMSpec(name=name, memory="64Mi"), created_at=0.0, reason=reason)

    for i in range(20):
        await store.vmis.put(f"vm{i}", vmi(f"vm{i}", "initial"))
    seen: list[str] = []
    initial = asyncio.Event()

    async def watch() -> None:
        async for change in store.vmis.updates():
            if change is None:
                initial.set()
            elif change.value is not None:
                seen.append(change.value.reason)
                if len(seen) == 20 + 300:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(initial.wait(), 10)
    for i in range(300):
        await store.vmis.put(f"vm{i % 7}", vmi(f"vm{i % 7}", str(i)))
    await asyncio.wait_for(watcher, 30)
    assert seen == ["initial"] * 20 + [str(i) for i in range(300)]


async def vmis_consumers(store: Store, wanted: list[DeliverPolicy] | None = None) -> list[DeliverPolicy | None]:
    """The deliver policies of KV_vmis's consumers, once they are ``wanted`` (one from a sequence on),
    or as they are after 5 s."""
    wanted = wanted if wanted is not None else [DeliverPolicy.BY_START_SEQUENCE]
    policies: list[DeliverPolicy | None] = []
    for _ in range(100):
        consumers = await store.js.consumers_info(subjects.kv_stream(subjects.BUCKET_VMIS))
        policies = [c.config.deliver_policy for c in consumers]
        if policies == wanted:
            break
        await asyncio.sleep(0.05)
    return policies


async def test_a_following_watch_is_one_consumer_from_a_sequence(store: Store) -> None:
    await store.vmis.put("vm0", VMI(name="vm0", uid="u", spec=VMSpec(name="vm0", memory="64Mi"), created_at=0.0))
    changes = store.vmis.updates()
    assert (await anext(changes)) is not None and (await anext(changes)) is None  # the current value, the end
    following = asyncio.create_task(anext(changes))  # the watch goes on: it switches, then waits
    assert await vmis_consumers(store) == [DeliverPolicy.BY_START_SEQUENCE]
    await store.vmis.put("vm0", VMI(name="vm0", uid="u", spec=VMSpec(name="vm0", memory="64Mi"), created_at=1.0))
    change = await asyncio.wait_for(following, 5)
    assert change is not None and change.value is not None and change.value.created_at == 1.0
    await changes.aclose()


async def test_a_watch_of_keys_not_there_follows_from_where_it_began(store: Store) -> None:
    """None of the watched keys there (a node's before its first VMI): the watch follows the changes
    from where its consumer began at once, and each change of its keys comes once, none of the others."""
    for i in range(5):
        await store.vmis.put(f"other{i}", VMI(name=f"other{i}", uid="u", spec=VMSpec(name=f"other{i}", memory="64Mi"),
                                              created_at=0.0))
    changes = store.vmis.updates("vm0")
    assert (await anext(changes)) is None  # no current value
    following = asyncio.create_task(anext(changes))
    assert await vmis_consumers(store) == [DeliverPolicy.BY_START_SEQUENCE]
    for at in (1.0, 2.0):
        await store.vmis.put("other0", VMI(name="other0", uid="u", spec=VMSpec(name="other0", memory="64Mi"),
                                           created_at=at))
        await store.vmis.put("vm0", VMI(name="vm0", uid="u", spec=VMSpec(name="vm0", memory="64Mi"), created_at=at))
    first = await asyncio.wait_for(following, 5)
    second = await asyncio.wait_for(anext(changes), 5)
    assert [c.value.created_at if c is not None and c.value is not None else None
            for c in (first, second)] == [1.0, 2.0]
    await changes.aclose()


async def test_a_watch_of_keys_not_there_keeps_its_one_consumer_when_they_come(store: Store) -> None:
    """An empty bucket (a new node's copies): the watch's consumer is one of the changes from the
    start, and stays the same one as its keys come (a burst of binds to a thousand new nodes used to
    re-create a consumer for each node at its first VMI)."""
    stream = subjects.kv_stream(subjects.BUCKET_VMIS)
    changes = store.vmis.updates("vm0")
    assert (await anext(changes)) is None  # no current value
    following = asyncio.create_task(anext(changes))
    assert await vmis_consumers(store) == [DeliverPolicy.BY_START_SEQUENCE]
    before = [c.name for c in await store.js.consumers_info(stream)]
    for at in (1.0, 2.0):
        await store.vmis.put("vm0", VMI(name="vm0", uid="u", spec=VMSpec(name="vm0", memory="64Mi"), created_at=at))
    first = await asyncio.wait_for(following, 5)
    second = await asyncio.wait_for(anext(changes), 5)
    assert [c.value.created_at if c is not None and c.value is not None else None
            for c in (first, second)] == [1.0, 2.0]
    await asyncio.sleep(0.5)  # a re-create goes on in the background: give it time to show
    assert [c.name for c in await store.js.consumers_info(stream)] == before
    await changes.aclose()


async def test_a_watch_ends_when_its_cancel_was_swallowed(store: Store) -> None:
    """On Python 3.11 a cancel can be lost to a reply that arrives with it (asyncio.wait_for inside
    nats-py returns the reply): the task goes on, and its watch must not keep it alive for ever."""
    got = asyncio.Event()

    async def watcher() -> None:
        async for _change in store.vmis.watch():
            got.set()
            try:
                await asyncio.sleep(30)  # stands for a request whose reply came with the cancel
            except asyncio.CancelledError:
                pass  # lost, as asyncio.wait_for on 3.11 loses it

    task = asyncio.create_task(watcher())
    await store.vmis.put("vm1", VMI(name="vm1", uid="u", spec=VMSpec(name="vm1", memory="64Mi"), created_at=0.0))
    await asyncio.wait_for(got.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
