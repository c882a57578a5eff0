"""Events recorded off the caller's path: ``record`` queues one and returns at once; a few workers
publish them (each a JetStream publish awaiting its ack), so a burst of binds waits for no event and
the events stream is not flooded with thousands of publishes at a time. ``close`` publishes what is
still queued (for a bounded time) before it returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from proto.events import Event
from servicekit.cancelling import cancel_and_wait

log = structlog.get_logger()
WORKERS = 32
CLOSE_WITHIN_S = 10.0


class EventSink:
    def __init__(self, emit: Callable[[Event], Awaitable[None]], *, workers: int = WORKERS) -> None:
        self._emit = emit
        self._queue: asyncio.Queue[Event] = asyncio.Queue()  # unbounded: recording never waits
        self._count = workers
        self._workers: list[asyncio.Task[None]] = []  # started with the first event (needs the loop)

    def record(self, event: Event) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work()) for _ in range(self._count)]
        self._queue.put_nowait(event)

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._emit(event)  # Store.emit logs a lost event and never raises
            except Exception:  # noqa: BLE001 - one event lost must not stop the others
                log.exception("event not recorded", reason=event.reason, name=event.name)
            finally:
                self._queue.task_done()

    async def flushed(self) -> None:
        """Returns once every event recorded so far is published."""
        await self._queue.join()

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flushed(), CLOSE_WITHIN_S)
        if self._queue.qsize():
            log.warning("events not recorded at stop", count=self._queue.qsize())
        await cancel_and_wait(self._workers)  # each publishes: a plain cancel may be lost (servicekit.cancelling)
