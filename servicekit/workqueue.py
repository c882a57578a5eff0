"""One serial worker per key, keys in parallel (Kopf's model).

``kick(key)`` asks for a reconcile of key; kicks during a run coalesce into one more run, so a
reconcile never races itself and never misses the latest change.

A failure carries its retry policy, as Kopf's permanent and temporary errors do: an ApiError that a
retry cannot help (Invalid, Forbidden, NotFound...) is logged and left until the key is kicked again
(its object changed); anything else is temporary and retried with a back-off per key, doubling from
``retry_after`` to ``retry_max``, and reset by a success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from proto.errors import ApiError
from servicekit.cancelling import cancel_and_wait

log = structlog.get_logger()


class WorkQueue:
    def __init__(self, reconcile: Callable[[str], Awaitable[None]], *, retry_after: float = 1.0,
                 retry_max: float = 30.0, bind: tuple[str, ...] = ()) -> None:
        """bind: log context names the key is bound to in its worker (every line it logs carries them)."""
        self._reconcile = reconcile
        self._retry_after = retry_after
        self._retry_max = retry_max
        self._failures: dict[str, int] = {}
        self._bind = bind
        self._dirty: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def kick(self, key: str) -> None:
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile-{key}")

    def busy(self, key: str) -> bool:
        """Whether key's worker is running (or asked to)."""
        return key in self._tasks

    async def _run(self, key: str) -> None:
        # Each worker is a task of its own, with its own copy of the context: the binding stays in it.
        structlog.contextvars.bind_contextvars(**dict.fromkeys(self._bind, key))
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._reconcile(key)
                    self._failures.pop(key, None)
                except asyncio.CancelledError:
                    raise
                except ApiError as exc:
                    if not exc.retryable:
                        self._failures.pop(key, None)
                        log.warning("reconcile failed; not retried until it changes", key=key, error=str(exc))
                        continue
                    await self._back_off(key, str(exc))
                except Exception as exc:  # noqa: BLE001 - unknown: temporary, as Kopf treats it
                    log.exception("reconcile failed; will retry", key=key)
                    await self._back_off(key, str(exc) or type(exc).__name__)
        finally:
            self._tasks.pop(key, None)

    def retry_delay(self, key: str) -> float:
        """The back-off before the next retry of key (after its failures so far)."""
        return min(self._retry_after * 2.0 ** max(self._failures.get(key, 0) - 1, 0), self._retry_max)

    async def _back_off(self, key: str, error: str) -> None:
        self._failures[key] = self._failures.get(key, 0) + 1
        delay = self.retry_delay(key)
        log.info("retrying", key=key, error=error, after_s=delay, failures=self._failures[key])
        await asyncio.sleep(delay)
        self._dirty.add(key)

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks.values()))
