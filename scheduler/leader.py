"""The shell of leader election: one scheduler at a time runs the controllers (scheduler.lease decides).

``on_lead`` runs when this process becomes the leader, ``on_lose`` when it stops being one (it
could not renew in time, or it is shutting down); both are awaited before the next step, so the
controllers of a deposed leader are stopped before it reads the lease again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import structlog

from proto.errors import ApiError, Code
from proto.state import Lease
from scheduler import lease
from scheduler.lease import Step, Timing, View
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Bucket

log = structlog.get_logger()


class Elector:
    def __init__(self, bucket: Bucket[Lease], key: str, me: str, *, on_lead: Callable[[], Awaitable[None]],
                 on_lose: Callable[[], Awaitable[None]], timing: Timing | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.bucket = bucket
        self.key = key
        self.me = me
        self.on_lead = on_lead
        self.on_lose = on_lose
        self.timing = timing or Timing()
        self.clock = clock
        self.wall = wall
        self.leading = False
        self.view: View | None = None
        self.last_renewed: float | None = None
        self._starting: asyncio.Future[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the election must outlive any one failure; the deadline keeps it safe
                log.exception("leader election step failed")
            await asyncio.sleep(self.timing.poll)

    async def tick(self) -> None:
        if self.leading and not lease.still_leading(self.last_renewed, self.clock(), self.timing):
            await self._lose("the lease was not renewed in time")
        if self.leading and self._starting is not None and self._starting.done() \
                and not self._starting.cancelled() and self._starting.exception() is not None:
            log.warning("could not start leading", error=repr(self._starting.exception()))
            await self._lose("could not start leading")  # and lead again at the next renewal
        try:
            await self._step()
        except ApiError as exc:
            if exc.code is Code.UNAVAILABLE:  # NATS away or slow (the store's word for it): as below
                log.debug("lease not read or written", error=exc.message)
                return
            if exc.code not in (Code.CONFLICT, Code.ALREADY_EXISTS):
                raise
            self.view = None  # someone else wrote it: read it afresh
        except (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            # NATS away or slow: nothing to do but try again; the deadline above decides
            log.debug("lease not read or written", error=str(exc) or type(exc).__name__)

    async def _step(self) -> None:
        # The leader knows the lease from its own last write, and renews on that revision: a read at
        # every poll (4 a second) told it nothing more. Anyone else's write since makes the renewal
        # a CONFLICT (tick), and the next step reads afresh.
        if not (self.leading and self.view is not None and self.view.holder == self.me):
            entry = await self.bucket.get(self.key)
            now = self.clock()
            if entry is None:
                self.view = lease.seen(self.view, None, None, self.timing.duration, now)
            else:
                self.view = lease.seen(self.view, entry.revision, entry.value.holder, entry.value.duration, now)
        now = self.clock()
        what = lease.step(self.view, self.me, now, self.last_renewed, self.timing)
        if what is Step.WAIT:
            return
        began = self.clock()  # the deadline counts from before the write: it may land late, never early
        record = Lease(holder=self.me, duration=self.timing.duration, acquired_at=self.wall())
        if what is Step.CREATE:
            revision = await self.bucket.create(self.key, record)
        elif self.view.revision is not None:
            revision = await self.bucket.update(self.key, record, self.view.revision)
        else:
            return
        self.view = View(revision, self.me, self.timing.duration, began)
        self.last_renewed = began
        if not self.leading:
            log.info("leading", holder=self.me, took_over=what is Step.TAKE_OVER)
            self.leading = True
            # started beside the renewals, which must go on however long starting takes
            self._starting = asyncio.ensure_future(self.on_lead())

    async def _lose(self, why: str) -> None:
        log.warning("no longer leading", holder=self.me, why=why)
        self.leading = False
        if self._starting is not None:
            await cancel_and_wait([self._starting])  # a start cancelled as a reply lands goes on otherwise
            self._starting = None
        await self.on_lose()

    async def resign(self) -> None:
        """On shutdown: stop leading, then delete the lease so another takes over at once."""
        if not self.leading:
            return
        await self._lose("shutting down")
        if self.view is not None and self.view.holder == self.me and self.view.revision is not None:
            try:
                await self.bucket.delete(self.key, self.view.revision)
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                log.info("lease not released", error=str(exc) or type(exc).__name__)
