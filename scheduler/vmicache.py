"""The leader's copy of every VMI, newest revision wins: what the binder counts each node's
allocation from, so a decision reads no bucket and sees the binder's own writes at once."""

from __future__ import annotations

from proto.state import VMI
from servicekit.store import Change, Entry, Store


class VmiCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, Entry[VMI]] = {}
        self._revisions: dict[str, int] = {}  # deleted keys too, so an older update never comes back
        self.primed = False

    async def prime(self) -> None:
        """Read every VMI once: until then no decision may count a node's allocation."""
        for entry in await self.store.vmis.items():
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

    def wrote(self, key: str, value: VMI, revision: int) -> None:
        self.apply(Change(key, value, revision))

    def values(self) -> list[VMI]:
        return [e.value for e in self.entries.values()]
