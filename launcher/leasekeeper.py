"""A high-availability VMI's lease, kept by its launcher, and the fence when it cannot be
(proto.fencing has the timing contract with the control plane).

The launcher renews by compare-and-set every RENEW_EVERY_S. Once no renewal sent in the last
FENCE_AFTER_S seconds was acknowledged, or the control plane has taken the lease away, it calls
``fence``: that kills QEMU at once, before the control plane may run the VM anywhere else. A lease,
once lapsed, is never renewed again: a launcher frozen past its deadline fences before it sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from proto import fencing, subjects
from proto.errors import ApiError, Code
from proto.state import VmiLease

log = structlog.get_logger()


class LeaseBucket(Protocol):
    """The KV bucket of leases, as servicekit.store.Bucket[VmiLease] offers it."""

    async def put(self, key: str, value: VmiLease) -> int: ...

    async def update(self, key: str, value: VmiLease, revision: int) -> int: ...

    async def delete(self, key: str, revision: int | None = None) -> None: ...


class LeaseNotTaken(Exception):
    """The first write was not acknowledged in time: no HA guest may start without a lease."""


class LeaseKeeper:
    def __init__(self, bucket: LeaseBucket, *, node: str, vmi: str, uid: str, fence: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.bucket = bucket
        self.key = subjects.vmi_lease(node, vmi)
        self.uid = uid
        self.fence = fence
        self.clock = clock
        self.sleep = sleep
        self.revision = 0
        self.renewals = 0
        self.last_acknowledged = 0.0
        self.fenced: str | None = None  # why, once fenced

    async def take(self) -> None:
        """The first lease, before the domain starts; LeaseNotTaken if the bus does not take it."""
        sent = self.clock()
        try:
            self.revision = await asyncio.wait_for(self.bucket.put(self.key, VmiLease(uid=self.uid)),
                                                   fencing.FENCE_AFTER_S)
        except (TimeoutError, ApiError, OSError) as exc:
            raise LeaseNotTaken(f"could not take the high-availability lease: {exc or type(exc).__name__}") from None
        self.last_acknowledged = sent
        log.info("lease taken", key=self.key, revision=self.revision)

    async def run(self) -> str:
        """Renew until fenced; returns why it fenced (after fencing). Nothing ends it but a fence
        (or cancelling it): a keeper that died quietly would leave a guest the control plane will
        soon run elsewhere."""
        try:
            return await self._renew()
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave an unfenced guest
            return self._fence(f"the lease keeper failed: {exc or type(exc).__name__}")

    async def _renew(self) -> str:
        while True:
            sent = self.clock()
            if fencing.must_fence(self.last_acknowledged, sent):
                return self._fence(f"the lease was not renewed for {sent - self.last_acknowledged:.1f}s "
                                   f"(the node lost the bus)")
            renewed = VmiLease(uid=self.uid, renewals=self.renewals + 1)
            try:
                # a renewal that lands after its time is no use: this one may take only what is left
                self.revision = await asyncio.wait_for(self.bucket.update(self.key, renewed, self.revision),
                                                       fencing.time_left(self.last_acknowledged, sent))
                self.renewals += 1
                self.last_acknowledged = sent
            except ApiError as exc:
                if exc.code is Code.CONFLICT:  # the control plane took it away: it has failed us over
                    return self._fence("the control plane took the lease away (the instance was failed over)")
                log.warning("lease renewal refused", error=exc.message)
            except Exception as exc:  # noqa: BLE001 - whatever it was, the deadline decides
                log.warning("lease renewal failed", error=str(exc) or type(exc).__name__)
            await self.sleep(max(fencing.RENEW_EVERY_S - (self.clock() - sent), 0.0))

    def _fence(self, why: str) -> str:
        self.fenced = why
        log.error("fencing: killing the guest so it never runs twice", key=self.key, reason=why)
        self.fence(why)
        return why

    async def release(self, patience: float = 2.0) -> None:
        """The instance ended here in order: its lease goes (a lapsed one would do no harm either)."""
        if self.fenced is not None:
            return
        try:
            await asyncio.wait_for(self.bucket.delete(self.key, self.revision), patience)
        except (TimeoutError, ApiError, OSError) as exc:
            log.info("lease not released; the control plane drops it once it lapses", error=str(exc))
