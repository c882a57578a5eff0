"""The ``vmis`` bucket as the binder and its preemptions write it: a narrow Protocol, so unit tests
hand them a small fake."""

from __future__ import annotations

from typing import Protocol

from proto.state import VMI
from servicekit.store import Entry


class VmiWrites(Protocol):
    """The ``vmis`` bucket as the binder writes it (servicekit.store.Bucket; a fake in unit tests)."""

    async def get(self, key: str) -> Entry[VMI] | None: ...

    async def update(self, key: str, value: VMI, revision: int) -> int: ...
