"""The leader's copy of every VMI, newest revision wins: what the binder decides from (the VMI and its
revision, for the CAS) and counts each node's allocation from (a listener, scheduler.capacity, told
of every change as it is applied), so a decision reads no bucket and sees the binder's own writes at
once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from proto.state import VMI
from servicekit.store import Change, Entry


class VmiSource(Protocol):
    """What the cache reads (the ``vmis`` bucket, servicekit.store.Bucket; a fake in unit tests)."""

    async def items(self) -> list[Entry[VMI]]: ...


class VmiCache:
    def __init__(self, bucket: VmiSource) -> None:
        self.bucket = bucket
        self.entries: dict[str, Entry[VMI]] = {}
        self._revisions: dict[str, int] = {}  # deleted keys too, so an older update never comes back
        self.primed = False
        self._listeners: list[Callable[[str, VMI | None], None]] = []

    def listen(self, listener: Callable[[str, VMI | None], None]) -> None:
        """Tell ``listener`` each VMI as applied from now on (None: gone), and every one held now."""
        self._listeners.append(listener)
        for key, entry in self.entries.items():
            listener(key, entry.value)

    async def prime(self) -> None:
        """Read every VMI once: until then no decision may count a node's allocation."""
        for entry in await self.bucket.items():
            self.apply(Change(entry.key, entry.value, entry.revision))
        self.primed = True

    def apply(self, change: Change[VMI]) -> None:
        if change.revision < self._revisions.get(change.key, 0):
            return
        self._revisions[change.key] = change.revision
        if change.value is None:
            self.entries.pop(change.key, None)
        else:
            self.entries[change.key] = Entry(change.key, change.value, change.revision)
        for listener in self._listeners:
            listener(change.key, change.value)

    def wrote(self, key: str, value: VMI, revision: int) -> None:
        self.apply(Change(key, value, revision))

    def values(self) -> list[VMI]:
        return [e.value for e in self.entries.values()]
