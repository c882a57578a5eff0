"""One serial worker per key: its log lines carry the key (vm, vmi), and only its own."""

from __future__ import annotations

import asyncio

import structlog

from servicekit.workqueue import WorkQueue


async def test_each_worker_logs_with_its_own_key_bound() -> None:
    seen: dict[str, dict[str, object]] = {}
    both_running = asyncio.Barrier(2)

    async def reconcile(key: str) -> None:
        await both_running.wait()  # the two workers overlap: each must still see only its own key
        seen[key] = structlog.contextvars.get_contextvars()

    queue = WorkQueue(reconcile, bind=("vm", "vmi"))
    queue.kick("alpha")
    queue.kick("beta")
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    await queue.close()
    assert seen["alpha"]["vm"] == seen["alpha"]["vmi"] == "alpha"
    assert seen["beta"]["vm"] == seen["beta"]["vmi"] == "beta"
    assert "vm" not in structlog.contextvars.get_contextvars()  # nothing leaks to the caller
