"""A key that goes and comes back is heard so by watches, on a real nats-server (the sweep that takes
deleted keys out: tests/integration/test_deletion_markers.py)."""

from __future__ import annotations

import pytest

from proto.spec import VMSpec
from proto.state import VM
from servicekit.store import Store

pytestmark = pytest.mark.integration


def vm(name: str, created_at: float) -> VM:
    return VM(spec=VMSpec(name=name, labels={"pad": "x" * 60}), created_at=created_at)


async def test_a_watch_hears_a_key_go_and_come_back(store: Store) -> None:
    await store.vms.create("a", vm("a", 1.0))
    heard: list[tuple[str, float | None]] = []
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    await store.vms.delete("a")
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    await store.vms.create("a", vm("a", 3.0))
    async for change in store.vms.watch("a", initial_only=True):
        heard.append((change.key, change.value.created_at if change.value else None))
    assert heard == [("a", 1.0), ("a", None), ("a", 3.0)]
    assert [e.key for e in await store.vms.items()] == ["a"]
