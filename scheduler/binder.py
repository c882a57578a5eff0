"""The binder: decisions from the leader's caches, written by CAS, many at a time.

Decisions are made one after another under one lock, each from the VMI as the cache holds it (its
revision is the CAS's) and the capacity index (scheduler.capacity), which the decision updates at
once by assuming the VMI on the chosen node. Nothing a decision reads needs a round trip, except for
a VMI with volumes (which node holds them) or Open vSwitch networks (which bridges they need).

Writes are not waited for between decisions: a batch of queued VMIs is decided, then their CAS
updates go out together, at most ``in_flight`` at a time. A write that conflicts (the VMI changed, or
another scheduler bound it) or fails forgets its assumption and the VMI is decided again on what it
is now; one that lands confirms it. Events are recorded by a sink (scheduler.eventsink), off the path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec
import structlog

from proto import migrations
from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO
from proto.errors import ApiError, Code
from proto.events import Event
from proto.spec import claims
from proto.state import FINAL_PHASES, VMI, Node
from scheduler import affinityplan, bindings, placement, volumes
from scheduler.bindlog import BindLog
from scheduler.capacity import Assumption, CapacityIndex
from scheduler.eventsink import EventSink
from scheduler.metrics import SchedulerMetrics
from scheduler.networkneeds import NetworkNeeds, network_needs
from scheduler.pendingqueue import PendingQueue
from scheduler.preempting import Preempting
from scheduler.preemption import Nominations
from scheduler.priorityclasses import ClassView, FixedClasses
from scheduler.vmicache import VmiCache
from scheduler.vmiwrites import VmiWrites
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Change, Entry, Store

log = structlog.get_logger()
BATCH = 256  # VMIs decided before their writes go out
IN_FLIGHT = 128  # CAS writes awaiting their acknowledgement at a time
# nodes that fit before scoring stops: they come least allocated first (scheduler.capacity), so for
# alike nodes the first is already the best; the rest are for nodes of different sizes, whose order
# by allocation is not quite their order by score (py-spy: walking 100 was a quarter of the binder)
ENOUGH_NODES = 16
READINESS_FOR_S = 0.5  # node readiness is judged again at most this often (it changes on a 15 s scale)
# a VMI bound as it is created (bind_new) syncs the index's nodes at most this often: per create, the walk
# over every node record would cost more than the decision; a batch of the binder's syncs at its start too
SYNC_NEW_S = 0.1
RETRY_S = 1.0


@dataclass
class Counters:
    binds: int = 0
    conflicts: int = 0
    unschedulable: int = 0


class NodeView(Protocol):
    """The node watch as the binder reads it (scheduler.nodewatch.NodeWatch)."""

    @property
    def nodes(self) -> Mapping[str, Node]: ...

    @property
    def distrusted(self) -> Mapping[str, float]: ...

    @property
    def generation(self) -> int: ...  # bumped by every change of a node's record

    def readiness(self) -> dict[str, bool]: ...


@dataclass(frozen=True, slots=True)
class _Write:
    name: str
    revision: int  # the cache's, for the CAS
    value: VMI
    node: str | None  # bound there; None: the Unschedulable condition
    message: str
    decided_at: float
    assumption: Assumption | None = None  # the capacity it assumed (bound), forgotten if the write fails


class Binder:
    def __init__(self, bucket: VmiWrites, vmis: VmiCache, nodes: NodeView, *, store: Store | None,
                 clock: Callable[[], float], counters: Counters, metrics: SchedulerMetrics, events: EventSink,
                 batch: int = BATCH, in_flight: int = IN_FLIGHT, enough: int | None = ENOUGH_NODES,
                 cpu_ratio: Callable[[], int] = lambda: DEFAULT_CPU_ALLOCATION_RATIO,
                 classes: ClassView | None = None) -> None:
        """store: for the VMIs with volumes or secondary networks, whose needs are looked up there
        (None: such a VMI cannot be placed; unit tests). cpu_ratio: the cluster's cpuAllocationRatio
        now (scheduler.clusterconfig's watch), read before each batch of decisions. classes: the
        PriorityClasses (scheduler.priorityclasses; None: Kubernetes' built-in ones only)."""
        self.bucket = bucket
        self.store = store
        self.vmis = vmis
        self.nodes = nodes
        self.clock = clock
        self.counters = counters
        self.metrics = metrics
        self.events = events
        self.batch = batch
        self.enough = enough
        self.cpu_ratio = cpu_ratio
        self.index = CapacityIndex(cpu_ratio())
        self.classes = classes or FixedClasses()
        self.nominations = Nominations()
        self.preempting = Preempting(bucket, vmis, self.index, self.nominations, events, clock)
        self.bound_log = BindLog()
        vmis.listen(self._observe)
        self._lock = asyncio.Lock()
        self._pending = PendingQueue()  # queued to decide, the highest priority first, each once
        self._writing: set[str] = set()  # decided, write in flight: not decided again until it ends
        self._creating: dict[str, Assumption] = {}  # bound by bind_new, its create in flight
        self._again: set[str] = set()  # kicked while its write was in flight
        self._wake = asyncio.Event()
        self._gate = asyncio.Semaphore(in_flight)
        self._writes: set[asyncio.Task[None]] = set()
        self._readiness: tuple[float, dict[str, float], dict[str, bool]] | None = None  # (when, distrusted, verdict)
        self._synced_at = float("-inf")  # the index's nodes last synced (time.monotonic)
        self._synced_generation = -1  # the node watch's generation then

    def kick(self, name: str) -> None:
        if name in self._writing:
            self._again.add(name)
            return
        self._pending.add(name, self._rank(name))
        self._wake.set()

    def _rank(self, name: str) -> int:
        """Its priority, for its place in the queue: a class missing is decided (and said) later."""
        entry = self.vmis.entries.get(name)
        try:
            return self.classes.resolve(entry.value.spec.priority_class_name).value if entry is not None else 0
        except ApiError:
            return 0

    def _observe(self, name: str, vmi: VMI | None) -> None:
        self.index.observe(name, vmi)
        target = migrations.target_key(name)
        if migrations.in_flight(vmi) is not None or self.index.holding(target):  # most never migrate
            self.index.observe(target, bindings.as_target(vmi))
        if self.nominations:
            for preemptor in self.preempting.observed(name, vmi):
                self.kick(preemptor)

    async def run(self) -> None:
        """Decide what is queued, a batch at a time, and send its writes off; forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                for write in await self._decide_all(self._pending.take(self.batch)):
                    await self._gate.acquire()  # back-pressure: decisions wait while too many are in flight
                    task = asyncio.create_task(self._write_off(write))
                    self._writes.add(task)
                    task.add_done_callback(self._writes.discard)
                await asyncio.sleep(0)  # the watch and the acknowledgements get their turn

    async def schedule(self, name: str) -> bool:
        """Decide and write one VMI now, waiting for the write and its event: True only if this call
        bound it."""
        async with self._lock:
            self._sync_nodes()
            write = await self._decide(name)
        if write is None:
            return False
        event = await self._write(write)
        if event is not None:
            self.events.record(event)
            await self.events.flushed()
        return event is not None and write.node is not None

    def bind_new(self, vmi: VMI) -> VMI | None:
        """A VMI about to be created, bound in the same write (the VM controller's create): one write
        and one watched change per instance fewer than creating it unbound and binding it after. The
        decision is the binder's (same caches, same capacity assumed before the write, so no
        overcommit); None when it needs a round trip (volumes, secondary networks), fits nowhere or is
        already being decided: then it is created unbound and the binder decides it as ever. The
        caller's create, by CAS on absence, then ``created`` or ``not_created``."""
        name, spec = vmi.name, vmi.spec
        if (name in self.vmis.entries or name in self._writing or name in self._pending  # not new to the binder
                or self.index.assumed(name) is not None or vmi.node_name or vmi.phase in FINAL_PHASES
                or vmi.stop_requested or next(iter(claims(spec.volumes)), None) is not None
                or any(n.kind == "multus" for n in spec.networks)
                or affinityplan.needed(vmi, bool(self.index.holders())) or self.nominations):
            return None  # (while a preemptor waits for room, every decision goes by priority, in the queue)
        try:
            priority = self.classes.resolve(spec.priority_class_name)
        except ApiError:
            return None  # decided in the queue, which says why it waits
        # the batches' sync, at most this often here, unless a node's record changed since
        if time.monotonic() - self._synced_at > SYNC_NEW_S or self.nodes.generation != self._synced_generation:
            self._sync_nodes()
        now = self.clock()
        choice = placement.place(spec, self.index.candidates(), None, frozenset(), enough=self._enough())
        if choice.node is None:
            return None
        bound = bindings.bound_to(vmi, choice, priority, now)
        self._creating[name] = self.index.assume(name, choice.node, self.index.request(vmi), bound)
        return bound

    def place_target(self, vmi: VMI, needs: NetworkNeeds | None = None) -> tuple[Assumption | None, str]:
        """A node for a migration's target (proto.migrations): any but the one it runs on, chosen as a
        bind would be, its room assumed there at once (as ``migrations.target_key``) so nothing else
        takes it meanwhile. Returns the assumption (its node is the choice; ``forget_target`` if the
        write fails), or None and why nothing fits. needs: what its secondary networks need of a node."""
        self._sync_nodes()
        holders = self.index.holders()
        verdict = affinityplan.judge(vmi, self.index.node_records, self.index.matching, holders) \
            if affinityplan.needed(vmi, bool(holders)) else None
        enough = None if verdict is not None and verdict.points else self._enough()
        others = (u for u in self.index.candidates() if u.node.name != vmi.node_name)
        needs = needs or NetworkNeeds()
        choice = placement.place(vmi.spec, others, None, needs.ovs_bridges, enough=enough, bridges=needs.bridges,
                                 vlan_ports=needs.vlan_ports, affinity=verdict)
        if choice.node is None:
            return None, choice.message
        there = msgspec.structs.replace(vmi, node_name=choice.node)
        return self.index.assume(migrations.target_key(vmi.name), choice.node, self.index.request(vmi), there), \
            choice.message

    def forget_target(self, name: str, assumption: Assumption) -> None:
        self.index.forget(migrations.target_key(name), assumption)

    def created(self, vmi: VMI, revision: int) -> Event:
        """``bind_new``'s VMI was created: its assumption confirmed, the bind counted; its Scheduled event."""
        self._creating.pop(vmi.name, None)
        self.vmis.wrote(vmi.name, vmi, revision)
        node = vmi.node_name or ""
        return self._bound(_Write(vmi.name, revision, vmi, node, "", vmi.created_at))

    def not_created(self, name: str) -> None:
        """``bind_new``'s create failed: its assumption goes, and only its own (the binder may have
        decided the same instance since, created unbound by someone else)."""
        assumption = self._creating.pop(name, None)
        if assumption is not None:
            self.index.forget(name, assumption)

    async def close(self) -> None:
        """Writes in flight finish (for a moment), then the rest are cancelled: CAS keeps that safe."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=5.0)
        await cancel_and_wait(list(self._writes))
        self.bound_log.close()

    # --- deciding ---------------------------------------------------------------------------------
    def _enough(self) -> int | None:
        """How many fitting nodes a decision scores: when every node is alike, the first that fits
        (the least allocated; the one scoring them all would choose, scheduler.capacity), else
        ``enough``. py-spy: scoring 16 alike nodes for each bind was a tenth of the scheduler."""
        return 1 if self.enough is not None and self.index.alike() else self.enough

    def _sync_nodes(self) -> None:
        self._synced_at = time.monotonic()
        self._synced_generation = self.nodes.generation
        self.index.set_cpu_ratio(self.cpu_ratio())
        self.index.sync_nodes(self.nodes.nodes, self._ready())

    def _ready(self) -> dict[str, bool]:
        """The node watch's verdicts, judged again every READINESS_FOR_S (py-spy: judging 1,000
        nodes for every batch was 8 % of the scheduler), and at once when a node is distrusted (a
        lease lapsed there: nothing new may go there, not even the instance fenced off it) or a node is
        new (it may be used at once)."""
        now = time.monotonic()
        if (self._readiness is None or now - self._readiness[0] > READINESS_FOR_S
                or self._readiness[1] != self.nodes.distrusted
                or not self.nodes.nodes.keys() <= self._readiness[2].keys()):  # a node new since
            self._readiness = (now, dict(self.nodes.distrusted), self.nodes.readiness())
        return self._readiness[2]

    async def _decide_all(self, names: list[str]) -> list[_Write]:
        out = []
        async with self._lock:
            self._sync_nodes()
            for name in names:
                try:
                    write = await self._decide(name)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a store read failed: this one is decided again later
                    log.exception("bind decision failed; trying again", vmi=name)
                    asyncio.get_running_loop().call_later(RETRY_S, self.kick, name)
                    continue
                if write is not None:
                    out.append(write)
        return out

    async def _decide(self, name: str) -> _Write | None:
        """One decision from the caches, its capacity assumed; None when there is nothing to write."""
        entry = self.vmis.entries.get(name)
        if entry is None:
            return None
        vmi = entry.value
        if vmi.node_name or vmi.phase in FINAL_PHASES or vmi.stop_requested:
            return None
        if name in self._writing:
            self._again.add(name)
            return None
        now = self.clock()
        spec = vmi.spec
        try:
            priority = self.classes.resolve(spec.priority_class_name)
        except ApiError as exc:  # as Kubernetes' admission refuses the pod: it waits, saying why
            return self._unschedulable(entry, exc.message, now)
        self.preempting.unreserve(name)  # its own claim on a node is not in its way
        # most VMIs have no volumes and no secondary networks: their decision needs no round trip
        has_volumes = next(iter(claims(spec.volumes)), None) is not None
        only, unplaceable, needs = None, None, NetworkNeeds()
        if has_volumes or any(n.kind == "multus" for n in spec.networks):
            if self.store is None:
                raise RuntimeError("no store to look the VMI's volumes and networks up in")
            if has_volumes:
                only, unplaceable = await volumes.required_node(self.store, spec)
            needs = await network_needs(self.store, spec)
        holders = self.index.holders()
        verdict = affinityplan.judge(vmi, self.index.node_records, self.index.matching, holders) \
            if affinityplan.needed(vmi, bool(holders)) else None
        if unplaceable is not None:
            choice = placement.Placement(None, unplaceable)
        else:
            # preferences rank every node: no stopping at the first that fits
            enough = None if verdict is not None and verdict.points else self._enough()
            choice = placement.place(spec, self.index.candidates(), only, needs.ovs_bridges, enough=enough,
                                     bridges=needs.bridges, vlan_ports=needs.vlan_ports, affinity=verdict)
        if choice.node is None:
            message = choice.message
            if priority.preempts and unplaceable is None:
                message = await self.preempting.preempt(vmi, priority.value, choice.message, only=only, needs=needs,
                                                        affinity=verdict)
            return self._unschedulable(entry, message, now)
        self.nominations.drop(name)
        bound = bindings.bound_to(vmi, choice, priority, now)
        assumption = self.index.assume(name, choice.node, self.index.request(vmi), bound)  # before any await
        if has_volumes and self.store is not None and not await volumes.pin(self.store, spec, choice.node):
            self.index.forget(name, assumption)
            self.kick(name)  # a volume went to another node meanwhile: decide again
            return None
        self._writing.add(name)
        return _Write(name, entry.revision, bound, choice.node, choice.message, now, assumption)

    def _unschedulable(self, entry: Entry[VMI], message: str, now: float) -> _Write | None:
        """Its Unschedulable condition saying why, unless it says so already."""
        updated = bindings.unschedulable(entry.value, message, now)
        if updated is None:
            return None
        self._writing.add(updated.name)
        return _Write(updated.name, entry.revision, updated, None, message, now)

    # --- writing ----------------------------------------------------------------------------------
    async def _write_off(self, write: _Write) -> None:
        try:
            event = await self._write(write)
            if event is not None:
                self.events.record(event)
        finally:
            self._gate.release()

    async def _write(self, write: _Write) -> Event | None:
        """The CAS update; the event to record if it landed, None if not (decided again then)."""
        name = write.name
        try:
            try:
                revision = await self.bucket.update(name, write.value, write.revision)
            except ApiError as exc:
                self._forget(write)
                if exc.code is not Code.CONFLICT:
                    raise
                if write.node is not None:
                    self.counters.conflicts += 1
                    self.metrics.conflicts.inc()
                # it changed meanwhile: decide again on what it is now (the watch may not have brought it yet)
                fresh = await self.bucket.get(name)
                if fresh is not None:
                    self.vmis.apply(Change(name, fresh.value, fresh.revision))
                self._again.add(name)
                return None
        except asyncio.CancelledError:
            self._forget(write)
            raise
        except Exception as exc:  # noqa: BLE001 - the write failed: decided again a moment later
            self._forget(write)
            log.warning("bind write failed; trying again", vmi=name, error=str(exc) or type(exc).__name__)
            asyncio.get_running_loop().call_later(RETRY_S, self.kick, name)
            return None
        finally:
            self._writing.discard(name)
            if name in self._again:
                self._again.discard(name)
                self.kick(name)
        self.vmis.wrote(name, write.value, revision)  # confirms the assumption in the index
        if write.node is None:
            self.counters.unschedulable += 1
            self.metrics.unschedulable.inc()
            log.info("unschedulable", vmi=name, reason=write.message)
            return bindings.event(name, "FailedScheduling", write.message, write.decided_at, warning=True)
        return self._bound(write)

    def _forget(self, write: _Write) -> None:
        if write.assumption is not None:  # an Unschedulable condition assumed nothing
            self.index.forget(write.name, write.assumption)

    def _bound(self, write: _Write) -> Event:
        node = write.node or ""
        self.counters.binds += 1
        self.metrics.binds.inc()
        self.metrics.latency.observe(max(write.decided_at - write.value.created_at, 0.0))
        self.bound_log.bound(write.name, node)
        return bindings.event(write.name, "Scheduled", f"bound to {node}", write.decided_at, node=node)

