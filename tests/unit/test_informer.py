"""The informer (servicekit.informer): one watch, a cache, every listener told; a watch that starts
over mends the cache (what went meanwhile is reported gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

from proto import subjects
from proto.stored import FOLLOWED_KINDS
from servicekit.informer import Informer, shared
from servicekit.store import Bucket, Change, Store


class FakeBucket:
    """Scripted watches: each ``updates`` call plays the next script, then waits forever (or fails)."""

    name = "fake"

    def __init__(self, *scripts: list[Change[str] | None]) -> None:
        self.scripts = list(scripts)
        self.watches = 0

    async def updates(self, keys: str = ">", *,
                      republished: str | None = None) -> AsyncGenerator[Change[str] | None, None]:
        self.watches += 1
        script = self.scripts.pop(0)
        for change in script:
            yield change
            await asyncio.sleep(0)
        if self.scripts:
            raise ConnectionError("the server went away")
        await asyncio.Event().wait()


async def test_one_watch_a_cache_and_every_listener_told() -> None:
    bucket = FakeBucket([Change("a", "1", 1), Change("b", "2", 2), None, Change("a", "3", 3), Change("b", None, 4)])
    informer = Informer(cast(Bucket[str], cast(Any, bucket)))
    first: list[Change[str]] = []
    second: list[Change[str]] = []

    async def listen(into: list[Change[str]]) -> None:
        async for change in informer.changes():
            into.append(change)

    tasks = [asyncio.create_task(listen(first)), asyncio.create_task(listen(second))]
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        assert {e.key: e.value for e in await informer.items()} == {"a": "3"}
        assert bucket.watches == 1
        for seen in (first, second):  # each ends where the bucket did: a is 3, b gone
            latest = {c.key: c.value for c in seen}
            assert latest == {"a": "3", "b": None}
    finally:
        for task in tasks:
            task.cancel()
        await informer.stop()


async def test_a_new_watch_reports_what_went_meanwhile(monkeypatch: Any) -> None:
    monkeypatch.setattr("servicekit.informer.REWATCH_S", 0.0)
    bucket = FakeBucket([Change("a", "1", 1), Change("b", "2", 2), None],
                        [Change("a", "1", 1), None])  # b was deleted while nobody watched
    informer = Informer(cast(Bucket[str], cast(Any, bucket)))
    seen: list[Change[str]] = []

    async def listen() -> None:
        async for change in informer.changes():
            seen.append(change)

    task = asyncio.create_task(listen())
    try:
        for _ in range(200):
            await asyncio.sleep(0)
            if bucket.watches == 2 and "b" not in informer.entries:
                break
        for _ in range(10):  # the listener's turn
            await asyncio.sleep(0)
        assert bucket.watches == 2
        assert {e.key for e in await informer.items()} == {"a"}
        assert seen[-1] == Change("b", None, 2)
        assert [c for c in seen if c.key == "a"] == [Change("a", "1", 1)]  # the same value is no change
    finally:
        task.cancel()
        await informer.stop()


def test_the_current_values_end_when_every_listed_key_has_come() -> None:
    from servicekit.kvwatch import Initial

    quiet = Initial()
    assert not quiet.saw("a", 1) and not quiet.done(1)
    assert quiet.saw("b", 0)  # the server counts nothing more: time to ask which keys there are
    quiet.expect(["a", "b"])
    assert quiet.done(0) and not quiet.waiting
    busy = Initial()  # 3 pending at the first; the keys keep changing, so pending never reaches 0
    assert not busy.saw("a", 3) and not busy.done(3)
    assert not busy.saw("c", 4) and not busy.saw("a", 5) and not busy.done(5)
    assert busy.saw("d", 6)  # more came than was pending at first: time to ask which keys there are
    busy.expect(["a", "b", "c", "d"])
    assert not busy.done(6)  # b's value was replaced behind the others: it has not come yet
    assert not busy.saw("a", 7) and not busy.done(7)
    assert not busy.saw("b", 8) and busy.done(8)


def test_pending_0_with_a_key_still_to_come_is_not_the_end() -> None:
    """nats-server 2.15 counted 0 pending after 200 quiet keys while 20 being rewritten were to come."""
    from servicekit.kvwatch import Initial

    read = Initial()
    assert not read.saw("quiet-1", 1)
    assert read.saw("quiet-2", 0)
    read.expect(["quiet-1", "quiet-2", "busy-1"])
    assert not read.done(0) and read.waiting  # nothing pending, yet busy-1 is listed: wait for it
    assert not read.saw("busy-1", 0) and read.done(0)
    listed_first = Initial(wanted=["busy-1"])  # the server counted 0 before anything came
    assert listed_first.waiting and not listed_first.done(0)
    listed_first.expect([])  # asked again: the key is gone for good
    assert listed_first.done(0)


def test_the_keys_are_asked_for_once_even_when_unanswered() -> None:
    from servicekit.kvwatch import Initial

    busy = Initial()
    assert not busy.saw("a", 2) and not busy.saw("b", 3)
    assert busy.saw("c", 4) and busy.wanted is None  # time to ask; the ask got no answer
    assert not busy.saw("d", 5) and not busy.saw("e", 6)  # not asked again on every update
    assert not busy.saw("f", 0) and busy.done(0)  # pending 0 then ends it


class FakeStore:
    def __init__(self, republishing: frozenset[str] = frozenset(subjects.FOLLOWED_BUCKETS)) -> None:
        self.informers: dict[tuple[str, str], object] = {}
        self.republishing = republishing


def named(name: str) -> Bucket[str]:
    bucket = FakeBucket()
    bucket.name = name
    return cast(Bucket[str], cast(Any, bucket))


def test_a_followed_bucket_is_followed_where_its_stream_republishes() -> None:
    store = cast(Store, cast(Any, FakeStore()))
    assert set(FOLLOWED_KINDS) == set(subjects.FOLLOWED_BUCKETS)
    for bucket in subjects.FOLLOWED_BUCKETS:
        assert shared(store, named(bucket)).republished == subjects.kv_republished(bucket)
    assert shared(store, named(subjects.BUCKET_VMIS)).republished is None  # no stream republishes it
    assert shared(store, named(subjects.BUCKET_NODES), "node1").republished is None  # a few keys: a consumer
    assert shared(store, named(subjects.BUCKET_NODES)) is shared(store, named(subjects.BUCKET_NODES))
    # a stream an older virtbus made without republishing, on a server that would not add it: a consumer
    older = cast(Store, cast(Any, FakeStore(frozenset())))
    assert shared(older, named(subjects.BUCKET_SERVICES)).republished is None
