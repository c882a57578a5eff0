"""Ending tasks for good. A task asked to stop can lose the request: on Python 3.11, ``asyncio.wait_for``
(nats-py awaits every request's reply with it) returns the reply when the task is cancelled as the
reply arrives, and the cancellation is gone (CPython gh-86296, fixed in 3.12's rewrite). The task
then goes on, often into a wait that never ends (a watch, an event), and whoever awaited its end waits
forever: a scheduler stopping right after it started hung in 1 of 5 tries so. Here a task still
running after a moment is cancelled again, until it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

AGAIN_AFTER_S = 1.0  # a task that ends at a cancellation (its clean-up too) ends well within this


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], again_after: float = AGAIN_AFTER_S) -> None:
    """Cancel every task and wait until all have ended, cancelling again any that lost the request.
    Their results and errors are theirs (as ``gather(return_exceptions=True)`` would leave them)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)


def raise_if_cancelling() -> None:
    """Honour a cancel the running task lost (see above): the task still counts it (``cancelling``),
    so a loop that calls this at each step ends instead of going on for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
