"""One serial worker per key, keys in parallel (Kopf's model).

``kick(key)`` asks for a reconcile of key; kicks during a run coalesce into one more run, so a
reconcile never races itself and never misses the latest change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


class WorkQueue:
    def __init__(self, reconcile: Callable[[str], Awaitable[None]], *, retry_after: float = 2.0,
                 bind: tuple[str, ...] = ()) -> None:
        """bind: log context names the key is bound to in its worker (every line it logs carries them)."""
        self._reconcile = reconcile
        self._retry_after = retry_after
        self._bind = bind
        self._dirty: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def kick(self, key: str) -> None:
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile-{key}")

    async def _run(self, key: str) -> None:
        # Each worker is a task of its own, with its own copy of the context: the binding stays in it.
        structlog.contextvars.bind_contextvars(**dict.fromkeys(self._bind, key))
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._reconcile(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reconcile failed; will retry", key=key)
                    await asyncio.sleep(self._retry_after)
                    self._dirty.add(key)
        finally:
            self._tasks.pop(key, None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
