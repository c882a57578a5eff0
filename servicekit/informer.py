"""One watch per bucket (and key filter) per process, with a local cache: client-go's informer.

A handler's parts (node ports, floating IPs, metrics, service rules, cluster DNS, the router, the
fence) each watched the same buckets and re-read them whole on every sync: a consumer on the server
per part and per read. An Informer runs one watch, keeps every current entry, and tells each of its
listeners about every change; ``items`` answers from the cache once the first values are in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import structlog

from proto import subjects
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Bucket, Change, Entry, Store

T = TypeVar("T")
log = structlog.get_logger()
REWATCH_S = 1.0


class Informer(Generic[T]):
    def __init__(self, bucket: Bucket[T], keys: str = ">", *, republished: str | None = None) -> None:
        """republished: where the bucket's stream republishes its writes (Bucket.updates)."""
        self.bucket = bucket
        self.keys = keys
        self.republished = republished
        self.entries: dict[str, Entry[T]] = {}
        self.synced = asyncio.Event()
        self.seen = 0  # the highest revision heard: a write at or below it is in the cache (or gone since)
        self._listeners: set[asyncio.Queue[Change[T]]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def items(self) -> list[Entry[T]]:
        """Every current entry, from the cache (waits for the first values once)."""
        self.start()
        await self.synced.wait()
        return list(self.entries.values())

    async def changes(self) -> AsyncIterator[Change[T]]:
        """As Bucket.watch: every current value, then every change, for as long as it is iterated."""
        self.start()
        queue: asyncio.Queue[Change[T]] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            await self.synced.wait()
            for entry in list(self.entries.values()):  # the queue holds what changes from here on
                yield Change(entry.key, entry.value, entry.revision)
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; the watch starts again and the cache is mended
                log.warning("informer watch ended; watching again", bucket=self.bucket.name, keys=self.keys,
                            error=str(exc) or type(exc).__name__)
            await asyncio.sleep(REWATCH_S)

    async def _follow(self) -> None:
        fresh: dict[str, Entry[T]] | None = {}  # the new watch's current values, until it says it has them all
        async for change in self.bucket.updates(self.keys, republished=self.republished):
            if change is not None:
                self.seen = max(self.seen, change.revision)
            if change is None:
                if fresh is not None:  # what the cache held and the new watch does not: gone meanwhile
                    for key in set(self.entries) - set(fresh):
                        self._apply(Change(key, None, self.entries[key].revision))
                    fresh = None
                    self.synced.set()
                continue
            if fresh is not None and change.value is not None:
                fresh[change.key] = Entry(change.key, change.value, change.revision)
            self._apply(change)

    def _apply(self, change: Change[T]) -> None:
        current = self.entries.get(change.key)
        if change.value is None:
            if current is None:
                return
            del self.entries[change.key]
        elif current is not None and current.revision == change.revision:
            return  # the same value again (a watch started over)
        else:
            self.entries[change.key] = Entry(change.key, change.value, change.revision)
        if not self.synced.is_set():
            return  # a listener starts from the cache once it is synced: the first values are in it
        for queue in self._listeners:
            queue.put_nowait(change)


def shared(store: Store, bucket: Bucket[T], keys: str = ">", *, republished: str | None = None) -> Informer[T]:
    """The process's informer of ``bucket`` (and ``keys``): made on first use, stopped with the store.
    A whole bucket whose stream republishes what it stores (subjects.FOLLOWED_BUCKETS, and
    Store.republishing) is followed there, with no consumer kept on the server."""
    found = store.informers.get((bucket.name, keys))
    if isinstance(found, Informer):
        return found  # the same bucket, so the same type
    if republished is None and keys == ">" and bucket.name in subjects.FOLLOWED_BUCKETS \
            and bucket.name in store.republishing:
        republished = subjects.kv_republished(bucket.name)
    informer: Informer[T] = Informer(bucket, keys, republished=republished)
    store.informers[(bucket.name, keys)] = informer
    return informer
