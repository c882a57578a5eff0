"""Keep some derived state true: run ``sync`` after any change seen on the watched sources,
debounced, retrying after a failure. For reconcilers whose every run recomputes everything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger()


async def resync_on_changes(sources: list[AsyncIterator[Any]], sync: Callable[[], Awaitable[None]], what: str,
                            *, debounce: float = 0.1, retry_after: float = 2.0) -> None:
    dirty = asyncio.Event()

    async def mark(changes: AsyncIterator[Any]) -> None:
        async for _ in changes:
            dirty.set()

    watchers = [asyncio.create_task(mark(source)) for source in sources]
    try:
        while True:
            await dirty.wait()
            await asyncio.sleep(debounce)
            dirty.clear()
            try:
                await sync()
            except Exception:
                log.exception(f"{what} sync failed; retrying")
                dirty.set()
                await asyncio.sleep(retry_after)
    finally:
        for w in watchers:
            w.cancel()
