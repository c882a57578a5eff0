"""While leading: a VM snapshot not taken by its ``failureDeadline`` (KubeVirt's VirtualMachineSnapshot
spec field; 5 minutes unless it says otherwise, 0 for none) is Failed, as KubeVirt's snapshot
controller fails it. What it waited for is said in its parts' reason and a warning event: a node that
is down, or a hotplugged disk its guest never got. Without it such a snapshot stayed Pending for ever.
Its content goes then, as KubeVirt deletes it: the parts already copied (and those copied later) are
discarded, their objects deleted; the record stays, Failed, until the user deletes it.

One watch of the VM snapshots; the controller sleeps until the next deadline (or a change), then
fails the parts still Pending with a compare-and-set each (proto.snapshots has the rules)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats.js.errors
import structlog

from proto.events import Event
from proto.snapshots import (
    SnapshotPhase,
    VMSnapshot,
    VolumeSnapshot,
    deadline_of,
    deadline_reason,
    discarded,
    failed_at_deadline,
    failed_by_deadline,
    is_discarded,
    past_deadline,
    to_discard,
    vm_snapshot_phase,
)
from servicekit.store import Store

log = structlog.get_logger()
RECHECK_S = 5.0  # past its deadline with a copy still under way: looked at again this often
REWATCH_S = 1.0
KIND = "VirtualMachineSnapshot"


class SnapshotDeadlines:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.records: dict[str, VMSnapshot] = {}  # those with a deadline, not known to be Ready or Failed
        self.next_look: dict[str, float] = {}  # when each is looked at: its deadline, then every RECHECK_S
        self._changed = asyncio.Event()

    async def run(self) -> None:
        watch = asyncio.create_task(self._watch())
        try:
            while True:
                self._changed.clear()
                wait = min(self.next_look.values(), default=self.clock() + RECHECK_S) - self.clock()
                if wait > 0:
                    try:
                        await asyncio.wait_for(self._changed.wait(), min(wait, RECHECK_S))
                    except TimeoutError:
                        pass
                    continue
                now = self.clock()
                for name in [n for n, at in self.next_look.items() if at <= now]:
                    self.next_look[name] = now + RECHECK_S  # unless settled below
                    try:
                        await self.check(self.records[name])
                    except Exception as exc:  # noqa: BLE001 - looked at again RECHECK_S later
                        log.warning("snapshot deadline not applied", snapshot=name,
                                    error=str(exc) or type(exc).__name__)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            try:
                async for change in self.store.vm_snapshots.watch():
                    self._note(change.key, change.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - watched again; it replays every current value
                log.warning("VM snapshot watch interrupted", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(REWATCH_S)

    def _note(self, name: str, record: VMSnapshot | None) -> None:
        deadline = deadline_of(record) if record is not None else None
        if record is None or deadline is None:
            self._forget(name)
            return
        self.records[name] = record
        self.next_look[name] = deadline
        self._changed.set()

    def _forget(self, name: str) -> None:
        self.records.pop(name, None)
        self.next_look.pop(name, None)

    async def check(self, record: VMSnapshot) -> list[str]:
        """Fails what the VM snapshot still waits for, past its deadline, and discards what it holds
        once Failed by it; the parts it failed now."""
        now = self.clock()
        parts = await self._parts(record)
        failed = []
        for part in past_deadline(record, parts, now):
            entry = await self.store.snapshots.mutate(part.name, lambda s: failed_by_deadline(s, record, now))
            if entry is not None and entry.value.phase is SnapshotPhase.FAILED:
                failed.append(part.name)
        if failed:
            log.warning("snapshot deadline exceeded", snapshot=record.name, vm=record.vm, failed=failed)
            await self.store.emit(Event(
                kind=KIND, name=record.name, reason="SnapshotDeadlineExceeded", type="Warning", timestamp=now,
                message=f"{deadline_reason(record)}; still pending: {', '.join(sorted(failed))}"))
            parts = await self._parts(record)
        phase = vm_snapshot_phase(parts)
        if phase is SnapshotPhase.FAILED and failed_at_deadline(record, parts):
            parts = await self._discard(record, parts, now)
            if all(p is None or p.phase is not SnapshotPhase.IN_PROGRESS for p in parts):
                self._forget(record.name)  # nothing more will be copied for it
        elif phase in (SnapshotPhase.READY, SnapshotPhase.FAILED):
            self._forget(record.name)  # settled: its deadline no longer matters
        return failed

    async def _parts(self, record: VMSnapshot) -> list[VolumeSnapshot | None]:
        entries = [await self.store.snapshots.get(p) for p in record.volumes.values()]
        return [e.value if e is not None else None for e in entries]

    async def _discard(self, record: VMSnapshot, parts: list[VolumeSnapshot | None],
                       now: float) -> list[VolumeSnapshot | None]:
        """KubeVirt deletes the content of a VM snapshot Failed by its deadline: each Ready part is
        Failed (a compare-and-set) and its object deleted. Every discarded part's object is deleted
        again at each look, which finds it gone, so a deletion that failed is tried again."""
        for ready in to_discard(record, parts):
            entry = await self.store.snapshots.mutate(ready.name, lambda s: discarded(s, record, now))
            if entry is not None and entry.value.phase is SnapshotPhase.FAILED:
                log.info("snapshot copy discarded", snapshot=record.name, vm=record.vm, part=ready.name)
        parts = await self._parts(record)
        for part in parts:
            if part is not None and is_discarded(part):
                with contextlib.suppress(nats.js.errors.NotFoundError):  # deleted at an earlier look
                    await self.store.snapshot_objects.delete(part.uid)
        return parts
