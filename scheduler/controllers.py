"""The scheduler's imperative shell: VM controller, binder and node lifecycle, all by CAS on KV.

Each reads current state, asks a pure planner (vmplan, placement) what to do, and writes one
change by compare-and-set; the watch then brings the next reconcile.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import structlog

from proto.errors import ApiError, Code
from proto.events import Event
from proto.state import FINAL_PHASES, VMI, Condition, Phase
from scheduler import placement
from scheduler.metrics import SchedulerMetrics
from scheduler.vmplan import Action, backoff, plan
from servicekit.store import Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
NODE_LOST_AFTER_S = 40.0
RESYNC_S = 5.0


@dataclass
class Counters:
    binds: int = 0
    conflicts: int = 0
    unschedulable: int = 0
    latencies: list[float] = field(default_factory=list)


class Scheduler:
    """VM controller + binder + node lifecycle for one scheduler process (several may run)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 metrics: SchedulerMetrics | None = None,
                 release: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.release = release  # a deleted VM's addresses go back (scheduler/nodeapi.py)
        self.clock = clock
        self.counters = Counters()
        self.metrics = metrics or SchedulerMetrics()
        self._vm_queue = WorkQueue(self.reconcile_vm, bind=("vm",))
        self._bind_queue = WorkQueue(self._schedule_quietly, bind=("vm", "vmi"))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_vms()),
            asyncio.create_task(self._watch_vmis()),
            asyncio.create_task(self._resync()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._vm_queue.close()
        await self._bind_queue.close()

    async def _watch_vms(self) -> None:
        async for change in self.store.vms.watch():
            self._vm_queue.kick(change.key)

    async def _watch_vmis(self) -> None:
        async for change in self.store.vmis.watch():
            self._vm_queue.kick(change.key)
            if change.value is not None and change.value.node_name is None:
                self._bind_queue.kick(change.key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            try:
                await self.fail_lost_nodes()
                waiting = [e.key for e in await self.store.vmis.items() if e.value.node_name is None
                           and e.value.phase not in FINAL_PHASES]
                self.metrics.queue.set(len(waiting))
                for key in waiting:
                    self._bind_queue.kick(key)
            except Exception:
                log.exception("resync failed")

    # --- VM controller -------------------------------------------------------------------------
    async def reconcile_vm(self, name: str) -> None:
        vm = await self.store.vms.get(name)
        vmi = await self.store.vmis.get(name)
        now = self.clock()
        action = plan(vm.value if vm else None, vmi.value if vmi else None, now)
        if action is Action.NOTHING:
            if vm is None and vmi is None and self.release is not None:
                await self.release(name)
            if vm is not None and vm.value.next_start_at > now:
                asyncio.get_running_loop().call_later(vm.value.next_start_at - now + 0.05,
                                                      self._vm_queue.kick, name)
            return
        log.info("vm action", vm=name, action=action.value)
        if action is Action.CREATE_VMI and vm is not None:
            new = VMI(name=name, uid=str(uuid.uuid4()), spec=vm.value.spec, created_at=self.clock())
            try:
                await self.store.vmis.create(name, new)
                await self.event("VirtualMachine", name, "SuccessfulCreate", f"created instance {new.uid}")
            except ApiError as exc:
                if exc.code is not Code.ALREADY_EXISTS:
                    raise
            await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(
                v, start_requested=False, restart_of=None))
        elif action is Action.RESET_FAILURES:
            await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(v, failures=0, next_start_at=0.0))
        elif action is Action.CLEAR_START_REQUEST:
            await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(v, start_requested=False))
        elif action is Action.STOP_VMI and vmi is not None:
            uid = vmi.value.uid
            await self.store.vmis.mutate(name, lambda v: stop_vmi(v, uid, self.clock()))
        elif action is Action.DELETE_VMI and vmi is not None:
            if vm is not None and vmi.value.phase is Phase.FAILED and vm.value.restart_of != vmi.value.uid:
                failures = vm.value.failures + 1
                why = vmi.value.reason or "failed"
                await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(
                    v, failures=failures, next_start_at=now + backoff(failures), last_failure=why))
                log.info("instance failed; backing off", vm=name, failures=failures, seconds=backoff(failures))
                await self.event("VirtualMachine", name, "CrashLoopBackOff",
                                 f"{why}; next start in {backoff(failures):.0f}s", warning=True)
            try:
                await self.store.vmis.delete(name, vmi.revision)
                await self.event("VirtualMachine", name, "SuccessfulDelete", f"deleted instance {vmi.value.uid}")
            except ApiError as exc:
                if exc.code is not Code.CONFLICT:
                    raise
                self._vm_queue.kick(name)

    # --- binder ---------------------------------------------------------------------------------
    async def _schedule_quietly(self, name: str) -> None:
        await self.schedule(name)

    async def schedule(self, name: str) -> bool:
        """Try to bind one VMI; True only if this call's CAS bound it."""
        entry = await self.store.vmis.get(name)
        if entry is None:
            return False
        vmi = entry.value
        if vmi.node_name or vmi.phase in FINAL_PHASES or vmi.stop_requested:
            return False
        now = self.clock()
        nodes = [e.value for e in await self.store.nodes.items()]
        vmis = [e.value for e in await self.store.vmis.items()]
        choice = placement.place(vmi.spec, placement.usage(nodes, vmis, now))
        if choice.node is None:
            old = next((c for c in vmi.conditions if c.type == "PodScheduled"), None)
            if vmi.phase is Phase.SCHEDULING and old is not None and old.message == choice.message:
                return False
            cond = Condition(type="PodScheduled", status="False", reason="Unschedulable",
                             message=choice.message, last_transition_time=now)
            updated = msgspec.structs.replace(vmi, phase=Phase.SCHEDULING, conditions=_with(vmi, cond))
            try:
                await self.store.vmis.update(name, updated, entry.revision)
                self.counters.unschedulable += 1
                self.metrics.unschedulable.inc()
                log.info("unschedulable", vmi=name, reason=choice.message)
                await self.event("VirtualMachineInstance", name, "FailedScheduling", choice.message, warning=True)
            except ApiError as exc:
                if exc.code is not Code.CONFLICT:
                    raise
            return False
        cond = Condition(type="PodScheduled", status="True", reason="Scheduled",
                         message=f"bound to {choice.node} ({choice.message})", last_transition_time=now)
        bound = msgspec.structs.replace(vmi, phase=Phase.SCHEDULED, node_name=choice.node,
                                        conditions=_with(vmi, cond))
        try:
            await self.store.vmis.update(name, bound, entry.revision)
        except ApiError as exc:
            if exc.code is Code.CONFLICT:
                self.counters.conflicts += 1
                self.metrics.conflicts.inc()
                return False
            raise
        self.counters.binds += 1
        self.counters.latencies.append(now - vmi.created_at)
        self.metrics.binds.inc()
        self.metrics.latency.observe(max(now - vmi.created_at, 0.0))
        log.info("bound", vmi=name, node=choice.node)
        await self.event("VirtualMachineInstance", name, "Scheduled", f"bound to {choice.node}", node=choice.node)
        return True

    async def event(self, kind: str, name: str, reason: str, message: str, *, warning: bool = False,
                    node: str | None = None) -> None:
        await self.store.emit(Event(kind=kind, name=name, reason=reason, message=message, timestamp=self.clock(),
                                    type="Warning" if warning else "Normal", node=node))

    # --- node lifecycle -------------------------------------------------------------------------
    async def fail_lost_nodes(self) -> None:
        now = self.clock()
        lost = {e.key for e in await self.store.nodes.items() if now - e.value.heartbeat > NODE_LOST_AFTER_S}
        if not lost:
            return
        for entry in await self.store.vmis.items():
            vmi = entry.value
            if vmi.node_name in lost and vmi.phase not in FINAL_PHASES:
                log.warning("node lost; failing its vmi", vmi=vmi.name, node=vmi.node_name)
                await self.store.vmis.mutate(entry.key, functools.partial(_fail_lost, uid=vmi.uid, now=now))


def _with(vmi: VMI, cond: Condition) -> list[Condition]:
    return [*(c for c in vmi.conditions if c.type != cond.type), cond]


def stop_vmi(vmi: VMI, uid: str, now: float) -> VMI | None:
    if vmi.uid != uid or vmi.phase in FINAL_PHASES:
        return None
    if vmi.node_name is None:
        # Nobody runs it yet, so nobody else will finish it.
        return msgspec.structs.replace(vmi, stop_requested=True, phase=Phase.SUCCEEDED, finished_at=now,
                                       reason="Stopped before it was scheduled")
    return msgspec.structs.replace(vmi, stop_requested=True)


def _fail_lost(vmi: VMI, uid: str, now: float) -> VMI | None:
    if vmi.uid != uid or vmi.phase in FINAL_PHASES:
        return None
    return msgspec.structs.replace(vmi, phase=Phase.FAILED, reason="NodeUnreachable", finished_at=now)
