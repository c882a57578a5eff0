"""The controllers' watches start again when one fails (scheduler.controllers._rewatching)."""

from __future__ import annotations

import asyncio
import contextlib

from scheduler.controllers import _rewatching


async def test_a_failed_watch_starts_again() -> None:
    calls = 0
    again = asyncio.Event()

    async def watch() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("nats: connection closed")
        again.set()
        await asyncio.Event().wait()  # a healthy watch runs until cancelled

    task = asyncio.create_task(_rewatching("vmis", watch))
    try:
        await asyncio.wait_for(again.wait(), 5)
        assert calls == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
