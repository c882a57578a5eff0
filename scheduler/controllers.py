"""The scheduler's imperative shell: VM controller, binder and node lifecycle, all by CAS on KV.

Each reads current state, asks a pure planner (vmplan, placement, nodelife) what to do, and writes
one change by compare-and-set; the watch then brings the next reconcile. Only the leader runs them
(scheduler.leader); ``start``/``stop`` may be called again with each term.

Binds (scheduler.binder) are decided one at a time from the leader's caches, each assuming its
capacity on the node it chose before its write is acknowledged, so a burst never puts more on a node
than it holds; their writes go out many at a time.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import structlog

from proto import subjects
from proto.clusterconfig import ClusterConfig
from proto.errors import ApiError, Code
from proto.events import Event
from proto.state import FINAL_PHASES, VM, VMI, Phase, as_started
from scheduler import failover, nodelife
from scheduler.binder import Binder, Counters
from scheduler.clusterconfig import ClusterConfigWatch
from scheduler.eventsink import EventSink
from scheduler.metrics import SchedulerMetrics
from scheduler.migrations import Migrations
from scheduler.nodelife import Transition
from scheduler.nodevmis import NodeVmiMirror
from scheduler.nodewatch import NodeWatch
from scheduler.priorityclasses import ClassView, FixedClasses, WatchedClasses
from scheduler.stopping import stop_vmi
from scheduler.vmicache import VmCache, VmiCache
from scheduler.vmplan import Action, backoff, plan
from scheduler.workloads import Workloads
from servicekit import kvmarkers
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Entry, Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
RESYNC_S = 5.0
NODE_CHECK_S = 1.0
TEARDOWN_RECHECK_S = 5.0


class Scheduler:
    """VM controller + binder + node lifecycle for the leading scheduler process."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 metrics: SchedulerMetrics | None = None, nodes: NodeWatch | None = None,
                 release: Callable[[str], Awaitable[None]] | None = None,
                 config: ClusterConfigWatch | None = None) -> None:
        """nodes: the process's node watch, run by its owner; without one the scheduler runs its own.
        config: the process's watch of the cluster's configuration, likewise."""
        self.store = store
        self.release = release  # a deleted VM's addresses go back (scheduler/nodeapi.py)
        self.clock = clock
        self.counters = Counters()
        self.metrics = metrics or SchedulerMetrics()
        self._own_nodes = nodes is None
        self.nodes = nodes or NodeWatch(store)
        self._own_config = config is None
        self.config = config or ClusterConfigWatch(store)
        self.config.listen(self._config_changed)
        self.vmis = VmiCache(store.vmis)
        self.vms = VmCache(store.vms)
        self.watched = nodelife.Watched()
        self.vmis.listen(self.watched.apply)
        self._vmis_changed = asyncio.Event()
        self._watching = False  # leading, the watches keeping both caches: the VM controller looks there first
        self._live_vms: set[str] = set()  # VMs the running vms watch brought: its deletion would come the same way
        self._prime_lock = asyncio.Lock()
        self.events = EventSink(store.emit)
        self.classes: ClassView = FixedClasses()  # until leading: then the watch of the PriorityClasses
        self.binder = self._binder()
        self.migrations: Migrations | None = None  # led with the rest
        self._vm_queue = WorkQueue(self.reconcile_vm, bind=("vm",))
        self._tasks: list[asyncio.Task[None]] = []
        self.sweep_every_s = kvmarkers.SWEEP_S
        # replica sets and pools (scheduler.workloads): led with the rest
        self.workloads = Workloads(store, clock=clock, emit=lambda kind, name, reason, message: self.event(
            kind, name, reason, message), vmis=lambda: self.vmis.values(), vms=lambda: self.vms.values(),
            fed=True)
        self.mirror = NodeVmiMirror(store, fed=True)

    async def start(self) -> None:
        # A new term starts from what the bucket holds now, and from nobody's silence yet: time the
        # process did not lead (maybe because it could not see the bus) is not counted.
        self.vmis = VmiCache(self.store.vmis)
        self.vms = VmCache(self.store.vms)
        self.watched = nodelife.Watched()  # node lifecycle's VMIs, kept from the new cache
        self.vmis.listen(self.watched.apply)
        self.events = EventSink(self.store.emit)
        self.classes = await WatchedClasses.of(self.store)  # (a pending VMI waits for its class with a resync)
        self.binder = self._binder()  # its capacity index counts from the new cache, primed below
        self.migrations = Migrations(self.store, self.vmis, self.binder, self.events, clock=self.clock,
                                     config=lambda: self.config.current.migrations)
        self._vm_queue = WorkQueue(self.reconcile_vm, bind=("vm",))
        if self._own_nodes:
            await self.nodes.prime()
        if self._own_config:
            self._tasks.append(asyncio.create_task(self.config.run()))
        await self.config.primed.wait()  # never a decision on the default ratio when another is stored
        self.nodes.resume("leading")
        await self.vmis.prime()
        await self.vms.prime()
        self._watching = True
        self.mirror = NodeVmiMirror(self.store, fed=True)
        await self.workloads.start()  # before the watch that feeds it
        await self.migrations.start()
        migrations = self.migrations
        self.metrics.migrations.items = lambda: [e.value for e in migrations.items.values()]
        self._tasks += [
            asyncio.create_task(_rewatching("vms", self._watch_vms)),
            asyncio.create_task(_rewatching("vmis", self._watch_vmis)),
            asyncio.create_task(self.binder.run()),
            asyncio.create_task(self._resync()),
            asyncio.create_task(self._node_lifecycle()),
            asyncio.create_task(self.mirror.run()),  # what each node's handler watches
            asyncio.create_task(self._sweep_markers()),
            *([asyncio.create_task(self.nodes.run())] if self._own_nodes else []),
        ]

    async def stop(self) -> None:
        self._watching = False
        await self.workloads.stop()
        if self.migrations is not None:
            self.metrics.migrations.items = lambda: ()  # a leader's figures only
            await self.migrations.stop()
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._vm_queue.close()
        await self.binder.close()
        await self.events.close()

    async def _sweep_markers(self) -> None:
        """While leading: deleted keys go from every bucket (servicekit.kvmarkers), so churn never
        fills one."""
        await kvmarkers.keep_swept({name: self.store.raw[name] for name in subjects.STATE_BUCKETS},
                                   every_s=self.sweep_every_s, whole=kvmarkers.server_purges_safely(self.store.nc))

    def cached_vmi(self, name: str) -> Entry[VMI] | None:
        """The leader's copy of a VMI, as its watch last brought it; None when not leading."""
        return self.vmis.entries.get(name) if self._watching else None

    def _binder(self) -> Binder:
        return Binder(self.store.vmis, self.vmis, self.nodes, store=self.store, clock=self.clock,
                      counters=self.counters, metrics=self.metrics, events=self.events,
                      cpu_ratio=lambda: self.config.cpu_ratio, classes=self.classes)

    def _config_changed(self, config: ClusterConfig) -> None:
        """A new cpuAllocationRatio: the VMIs waiting for a node are decided again now (a higher one
        may fit them), not at the next resync. What runs stays where it is."""
        if not self._tasks:
            return  # not leading
        for vmi in self.vmis.values():
            if vmi.node_name is None and vmi.phase not in FINAL_PHASES:
                self.binder.kick(vmi.name)

    async def _watch_vms(self) -> None:
        # a new watch: what the last one brought is not known current (a deletion made while no watch
        # ran is never delivered), until this one brings it again
        self._live_vms.clear()
        async for change in self.store.vms.watch():
            if change.value is None:
                self._live_vms.discard(change.key)
            else:
                self._live_vms.add(change.key)
            self.vms.apply(change)  # before the kick: the reconcile it brings sees it
            self.workloads.vm_changed(change)
            self._vm_queue.kick(change.key)

    async def _watch_vmis(self) -> None:
        # the leader's one watch of every VMI: the node copies and the workloads are fed from it
        async for change in self.store.vmis.watch():
            self.vmis.apply(change)
            self.mirror.changed(change)
            self.workloads.vmi_changed(change)
            self._vmis_changed.set()
            vmi = change.value
            # a standalone VMI's change with no VM of its name calls for nothing (vmplan): no worker task
            # for each of a burst's creations and binds (a VM that comes later kicks its own reconcile)
            if vmi is None or not vmi.standalone or vmi.deleting or change.key in self.vms.entries:
                self._vm_queue.kick(change.key)
            if change.value is not None and change.value.node_name is None:
                self.binder.kick(change.key)

    async def vmi_changes(self) -> AsyncIterator[None]:
        """One item after the leader's watch applied VMI changes (several at once are one): for the
        endpoints controller, which needs to know only that they changed."""
        while True:
            await self._vmis_changed.wait()
            self._vmis_changed.clear()
            yield None

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            waiting = [v.name for v in self.vmis.values() if v.node_name is None and v.phase not in FINAL_PHASES]
            self.metrics.queue.set(len(waiting))
            for key in waiting:
                self.binder.kick(key)

    # --- VM controller -------------------------------------------------------------------------
    async def reconcile_vm(self, name: str) -> None:
        """From the caches while leading (most changes, every bind among them, call for nothing: no
        round trip then); anything that would write or release decides again on what the store holds,
        since a cache may miss a deletion made while its watch was down."""
        if self._watching:
            vm, vmi = self.vms.entries.get(name), self.vmis.entries.get(name)
            action = self._plan(vm, vmi, self.clock())
            if not self._acts(vm, vmi, action):
                await self._reconcile(name, vm, vmi)
                return
            if action is Action.CREATE_VMI and vmi is None:
                # A new VM's instance (every VM of a burst of creates): not its instance, since the
                # create itself fails if one exists (CAS on absence); nor the VM when the running watch
                # brought it (a deletion after comes by that watch and deletes the instance, as a deletion
                # racing a read would), else it is read again.
                if name in self._live_vms:
                    await self._reconcile(name, vm, None)
                    return
                stored = await self.store.vms.get(name)
                if stored is not None and self._plan(stored, None, self.clock()) is Action.CREATE_VMI:
                    await self._reconcile(name, stored, None)
                    return
                await self._reconcile(name, stored, await self.store.vmis.get(name))
                return
        await self._reconcile(name, await self.store.vms.get(name), await self.store.vmis.get(name))

    def _plan(self, vm: Entry[VM] | None, vmi: Entry[VMI] | None, now: float) -> Action:
        node = vmi.value.node_name if vmi else None
        node_ready = node is not None and node in self.nodes.nodes and self.nodes.ready(node)
        return plan(vm.value if vm else None, vmi.value if vmi else None, now, node_ready)

    def _acts(self, vm: Entry[VM] | None, vmi: Entry[VMI] | None, action: Action) -> bool:
        """Whether ``_reconcile`` would write (or release addresses) on this action."""
        return action is not Action.AWAIT_TEARDOWN and (action is not Action.NOTHING or (vm is None and vmi is None))

    async def _reconcile(self, name: str, vm: Entry[VM] | None, vmi: Entry[VMI] | None) -> None:
        now = self.clock()
        action = self._plan(vm, vmi, now)
        if action is Action.AWAIT_TEARDOWN:
            # The node's report brings the next reconcile; looking again now and then catches a
            # node that stops being Ready meanwhile.
            asyncio.get_running_loop().call_later(TEARDOWN_RECHECK_S, self._vm_queue.kick, name)
            return
        if action is Action.NOTHING:
            if vm is None and vmi is None and self.release is not None:
                await self.release(name)
            if vm is not None and vm.value.next_start_at > now:
                asyncio.get_running_loop().call_later(vm.value.next_start_at - now + 0.05,
                                                      self._vm_queue.kick, name)
            return
        log.info("vm action", vm=name, action=action.value)
        if action is Action.CREATE_VMI and vm is not None:
            new = VMI(name=name, uid=str(uuid.uuid4()), spec=vm.value.spec, created_at=self.clock(),
                      **as_started(vm.value.spec, paused=vm.value.start_paused))
            # leading, the binder binds it in the create itself where it can (scheduler.binder.bind_new)
            bound = self.binder.bind_new(new) if self._watching and self.vmis.primed else None
            try:
                revision = await self.store.vmis.create(name, bound or new)
            except BaseException as exc:
                if bound is not None:
                    self.binder.not_created(name)
                if not isinstance(exc, ApiError) or exc.code is not Code.ALREADY_EXISTS:
                    raise
            else:
                # recorded off this path (the binder's sink), as the instance's Scheduled event is
                self.events.record(self._event("VirtualMachine", name, "SuccessfulCreate",
                                               f"created instance {new.uid}"))
                if bound is not None:
                    self.events.record(self.binder.created(bound, revision))
            if vm.value.start_requested or vm.value.restart_of is not None or vm.value.start_paused:
                await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(  # else no read: nothing to clear
                    v, start_requested=False, restart_of=None, start_paused=False))
        elif action is Action.RESET_FAILURES:
            await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(v, failures=0, next_start_at=0.0))
        elif action is Action.CLEAR_START_REQUEST:
            await self.store.vms.mutate(name, lambda v: msgspec.structs.replace(v, start_requested=False))
        elif action is Action.STOP_VMI and vmi is not None:
            uid = vmi.value.uid
            await self.store.vmis.mutate(name, lambda v: stop_vmi(v, uid, self.clock()))
        elif action is Action.DELETE_VMI and vmi is not None:
            counts = not (vmi.value.fenced or vmi.value.evicted)  # its node was lost or drained; not the VM's fault
            if vm is not None and vmi.value.phase is Phase.FAILED and vm.value.restart_of != vmi.value.uid and counts:
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

    # --- binder (scheduler.binder) --------------------------------------------------------------
    async def schedule(self, name: str) -> bool:
        """Try to bind one VMI now; True only if this call's CAS bound it."""
        async with self._prime_lock:
            if not self.vmis.primed:  # called without start (tests): read what there is
                await self.vmis.prime()
            if not self.nodes.primed:
                await self.nodes.prime()
        return await self.binder.schedule(name)

    async def event(self, kind: str, name: str, reason: str, message: str, *, warning: bool = False,
                    node: str | None = None) -> None:
        await self.store.emit(self._event(kind, name, reason, message, warning=warning, node=node))

    def _event(self, kind: str, name: str, reason: str, message: str, *, warning: bool = False,
               node: str | None = None) -> Event:
        return Event(kind=kind, name=name, reason=reason, message=message, timestamp=self.clock(),
                     type="Warning" if warning else "Normal", node=node)

    # --- node lifecycle -------------------------------------------------------------------------
    async def _node_lifecycle(self) -> None:
        while True:
            await asyncio.sleep(NODE_CHECK_S)
            try:
                await self.check_leases()
                await self.check_nodes()
            except Exception:
                log.exception("node lifecycle check failed")

    async def check_leases(self) -> None:
        """Fail over the HA instances whose launcher's lease lapsed (scheduler.failover)."""
        now = self.nodes.clock()
        for vmi, silent in failover.lapsed(self.nodes.leases, self._cached_vmi_value, now):
            node, key = vmi.node_name or "", subjects.vmi_lease(vmi.node_name or "", vmi.name)
            # first: the node that lost it gets nothing new, not even this instance again
            self.nodes.distrust(node)
            change = functools.partial(failover.fail_over, uid=vmi.uid, node=node, silent=silent, now=self.clock())
            written = await self.store.vmis.mutate(vmi.name, change)
            # mutate returns the entry as read when fail_over wrote nothing (it ended meanwhile, or is
            # another instance now): only this very instance, fenced, is announced and its lease dropped
            if written is None or written.value.uid != vmi.uid or not written.value.fenced:
                continue
            self.vmis.wrote(vmi.name, written.value, written.revision)
            log.warning("lease lapsed; failing over", vmi=vmi.name, node=node, silent=round(silent, 1))
            await self.event("VirtualMachineInstance", vmi.name, failover.REASON, written.value.reason,
                             warning=True, node=node)
            await self._drop_lease(key)
        for key in failover.stale(self.nodes.leases, self._cached_vmi_value, now):
            await self._drop_lease(key)

    def _cached_vmi_value(self, name: str) -> VMI | None:
        entry = self.vmis.entries.get(name)
        return entry.value if entry is not None else None

    async def _drop_lease(self, key: str) -> None:
        # A renewal still in flight from the lost launcher then fails its compare-and-set.
        await self.store.vmi_leases.delete(key)
        self.nodes.leases.pop(key, None)

    async def check_nodes(self) -> None:
        """Unknown for the VMIs of a lost node, their phase back once it is heard again (nodelife)."""
        now = self.nodes.clock()
        lost = nodelife.lost(self.nodes.seen, now, self.nodes.thresholds)
        vmis = [e.value for name in self.watched.candidates(lost) if (e := self.vmis.entries.get(name))]
        for vmi, transition in nodelife.plan(vmis, self.nodes.seen, now, self.nodes.thresholds):
            node = vmi.node_name or ""
            if transition is Transition.TO_UNKNOWN:
                silent = nodelife.silent_for(self.nodes.seen[node], now)
                change = functools.partial(nodelife.mark_unknown, uid=vmi.uid, silent=silent, now=self.clock())
                message = f"node {node} has not reported for {silent:.0f}s: the instance's state is unknown"
                reason = nodelife.UNREACHABLE
            else:
                change = functools.partial(nodelife.restore, uid=vmi.uid, now=self.clock())
                message = f"node {node} reports again: back to {(vmi.phase_before_unknown or Phase.UNKNOWN).value}"
                reason = "NodeReachable"
            written = await self.store.vmis.mutate(vmi.name, change)
            if written is not None:
                self.vmis.wrote(vmi.name, written.value, written.revision)
                if written.value.phase is not vmi.phase:
                    log.warning("node lifecycle", vmi=vmi.name, node=node, phase=written.value.phase.value)
                    await self.event("VirtualMachineInstance", vmi.name, reason, message,
                                     warning=transition is Transition.TO_UNKNOWN, node=node)


async def _rewatching(bucket: str, watch: Callable[[], Awaitable[None]]) -> None:
    """A watch that ends or fails is started again; it replays every current value, so nothing is missed."""
    while True:
        try:
            await watch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged, and the watch starts again
            log.warning("watch ended; starting it again", bucket=bucket, error=str(exc) or type(exc).__name__)
        await asyncio.sleep(1.0)
