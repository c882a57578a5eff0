"""The leader's copy of every entry of a bucket, newest revision wins (``Cache``): for ``vmis``
(``VmiCache``), what the binder decides from (the VMI and its revision, for the CAS) and counts each
node's allocation from (a listener, scheduler.capacity, told of every change as it is applied), so a
decision reads no bucket and sees the binder's own writes at once; for ``vms``, what the VM controller
looks at first (scheduler.controllers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from proto.state import VM, VMI
from servicekit.store import Change, Entry

T = TypeVar("T")


class Source(Protocol[T]):
    """What the cache reads (a bucket, servicekit.store.Bucket; a fake in unit tests)."""

    async def items(self) -> list[Entry[T]]: ...


class Cache(Generic[T]):
    def __init__(self, bucket: Source[T]) -> None:
        self.bucket = bucket
        self.entries: dict[str, Entry[T]] = {}
        self._revisions: dict[str, int] = {}  # deleted keys too, so an older update never comes back
        self.primed = False
        self._listeners: list[Callable[[str, T | None], None]] = []

    def listen(self, listener: Callable[[str, T | None], None]) -> None:
        """Tell ``listener`` each entry as applied from now on (None: gone), and every one held now."""
        self._listeners.append(listener)
        for key, entry in self.entries.items():
            listener(key, entry.value)

    async def prime(self) -> None:
        """Read every entry once: until then no decision may count a node's allocation."""
        for entry in await self.bucket.items():
            self.apply(Change(entry.key, entry.value, entry.revision))
        self.primed = True

    def apply(self, change: Change[T]) -> None:
        if change.revision < self._revisions.get(change.key, 0):
            return
        self._revisions[change.key] = change.revision
        if change.value is None:
            self.entries.pop(change.key, None)
        else:
            self.entries[change.key] = Entry(change.key, change.value, change.revision)
        for listener in self._listeners:
            listener(change.key, change.value)

    def wrote(self, key: str, value: T, revision: int) -> None:
        self.apply(Change(key, value, revision))

    def values(self) -> list[T]:
        return [e.value for e in self.entries.values()]


VmiSource = Source[VMI]
VmiCache = Cache[VMI]
VmCache = Cache[VM]
