"""The volumes' records as a launcher reads them: from its process's informer of the volumes bucket,
which follows what the bucket's stream republishes (no consumer on the server, no read per look), and
is started only by a launcher whose guest has a volume to wait for or to grow (launcher.hotplug,
launcher.volumegrowth).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from typing import Protocol

from proto.state import PersistentVolume
from servicekit.informer import Informer


class VolumeRecords(Protocol):
    """InformedRecords; a stateful fake in the unit tests."""

    async def synced(self) -> None: ...  # following them, and every current record is in

    def get(self, name: str) -> PersistentVolume | None: ...

    def changes(self) -> AsyncIterator[str]: ...  # the name of each volume that changed, from now on


class InformedRecords:
    def __init__(self, informer: Informer[PersistentVolume]) -> None:
        self.informer = informer

    async def synced(self) -> None:
        self.informer.start()
        await self.informer.synced.wait()

    def get(self, name: str) -> PersistentVolume | None:
        entry = self.informer.entries.get(name)
        return entry.value if entry is not None else None

    async def changes(self) -> AsyncIterator[str]:
        async for change in self.informer.changes():
            yield change.key


async def wake_on_changes(records: VolumeRecords, names: Callable[[], Collection[str]], wake: asyncio.Event, *,
                          once: asyncio.Event) -> None:
    """A keeper's look as soon as a record of one of its volumes (names(), as its spec has them now)
    changes, not a poll; the records are followed only once ``once`` is set (its guest has such a volume)."""
    await once.wait()
    async for name in records.changes():
        if name in names():
            wake.set()
