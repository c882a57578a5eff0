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


async def test_a_failure_carries_its_retry_policy() -> None:
    from proto.errors import ApiError, Code

    runs: dict[str, int] = {"temporary": 0, "permanent": 0, "flaky": 0}

    async def reconcile(key: str) -> None:
        runs[key] += 1
        if key == "temporary":
            raise ApiError(Code.UNAVAILABLE, "the control plane is away")
        if key == "permanent":
            raise ApiError(Code.INVALID, "this object can never be reconciled as it is")
        if key == "flaky" and runs[key] < 3:
            raise OSError("a hiccup")

    queue = WorkQueue(reconcile, retry_after=0.02, retry_max=0.08)
    for key in runs:
        queue.kick(key)
    await asyncio.sleep(0.5)
    assert runs["permanent"] == 1  # not retried: a retry cannot help
    assert runs["flaky"] == 3 and queue.retry_delay("flaky") == 0.02  # retried, and reset by its success
    # retried, backing off: 0.02, 0.04, 0.08, 0.08... so about 8 runs in 0.5 s, not 25
    assert 4 <= runs["temporary"] <= 10, runs
    assert queue.retry_delay("temporary") == 0.08
    queue.kick("permanent")  # its object changed: tried again
    await asyncio.sleep(0.05)
    assert runs["permanent"] == 2
    await queue.close()
