"""A task that lost its cancellation (as Python 3.11's wait_for loses one arriving with the reply) is
cancelled again until it ends; one that ends at the first is not waited for longer."""

from __future__ import annotations

import asyncio
import time

from servicekit.cancelling import cancel_and_wait


async def swallows_once(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass  # what a lost cancellation looks like to the task: it goes on
    await asyncio.Event().wait()  # ... into a wait nothing ends


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(swallows_once(started))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done  # one cancel, as `t.cancel(); await gather(t)` gives it, leaves it running
    await asyncio.wait_for(cancel_and_wait([task], again_after=0.05), 5.0)
    assert task.cancelled()


async def test_tasks_that_end_at_once_are_not_waited_for_longer() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    began = time.monotonic()
    await cancel_and_wait([*tasks, finished], again_after=5.0)
    assert time.monotonic() - began < 1.0
    assert all(t.cancelled() for t in tasks) and not finished.cancelled()
