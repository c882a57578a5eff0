"""The shell of node lifecycle: watch every node record, every node's lease (its heartbeat) and
every HA launcher's lease, and note, on this process's monotonic clock, when each heartbeat or
lease changed (scheduler.nodelife and scheduler.failover decide what that means).

A node beats by renewing its lease (BUCKET_NODE_LEASES); a handler from before leases beat by
rewriting its record's ``heartbeat``, which still counts when it changes.

Time this process could not see the bus is nobody's silence: when its connection comes back, or
its watch is started again, or it takes the lead, every node's silence starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from proto.state import Node, NodeLease, VmiLease
from scheduler import failover, nodelife
from scheduler.failover import LeaseSeen
from scheduler.nodelife import Seen, Thresholds
from servicekit.store import Change, Store

log = structlog.get_logger()
CONNECTION_POLL_S = 0.5


class NodeWatch:
    def __init__(self, store: Store, *, thresholds: Thresholds | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.thresholds = thresholds or Thresholds()
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self.seen: dict[str, Seen] = {}
        self.leases: dict[str, LeaseSeen] = {}
        # node -> the heartbeat it had when one of its leases lapsed: it counts as NotReady (nothing
        # new goes there, not even the instance just fenced off it) until it beats again
        self.distrusted: dict[str, float] = {}
        self.primed = False
        # bumped by every change of a node's record (a new node, one gone, a cordon): the binder syncs
        # its nodes at once on a new one, not at its next periodic sync
        self.generation = 0

    async def prime(self) -> None:
        """Read every node once, so a caller that decides now sees them all."""
        for entry in await self.store.nodes.items():
            self.apply(Change(entry.key, entry.value, entry.revision))
        for beat in await self.store.node_leases.items():
            self.apply_node_lease(Change(beat.key, beat.value, beat.revision))
        for lease in await self.store.vmi_leases.items():
            self.apply_lease(Change(lease.key, lease.value, lease.revision))
        self.primed = True

    def apply_lease(self, change: Change[VmiLease]) -> None:
        if change.value is None:
            self.leases.pop(change.key, None)
            return
        self.leases[change.key] = failover.observe(self.leases.get(change.key), change.value.uid, change.revision,
                                                   self.clock())

    def distrust(self, node: str) -> None:
        """Not Ready until its heartbeat changes: one of its leases lapsed, so it is likely cut off."""
        seen = self.seen.get(node)
        if seen is not None:
            self.distrusted[node] = seen.heartbeat

    def apply(self, change: Change[Node]) -> None:
        self.generation += 1
        if change.value is None:
            self.nodes.pop(change.key, None)
            self.seen.pop(change.key, None)
            return
        before = self.nodes.get(change.key)
        self.nodes[change.key] = change.value
        if before is None or before.heartbeat != change.value.heartbeat or change.key not in self.seen:
            # first sight, or a record's heartbeat moved (registration, a handler from before leases)
            self.seen[change.key] = nodelife.observe(self.seen.get(change.key), change.value.heartbeat, self.clock())

    def apply_node_lease(self, change: Change[NodeLease]) -> None:
        """A renewal is a beat; the lease's time is the node's own, compared only with itself."""
        if change.value is None or change.key not in self.nodes:
            return  # a lease alone is no node: the record (its capacity, its address) makes one
        self.seen[change.key] = nodelife.observe(self.seen.get(change.key), change.value.renewed_at, self.clock())

    def resume(self, why: str) -> None:
        if self.seen:
            log.info("node silence counted afresh", why=why, nodes=len(self.seen))
        self.seen = nodelife.resume(self.seen, self.clock())
        self.leases = failover.resume(self.leases, self.clock())

    def readiness(self, nodes: Iterable[Node] | None = None) -> dict[str, bool]:
        """Ready or not, per node; one the watch has not brought yet (read by the caller just now)
        is at its first sight, which counts as a beat (nodelife.observe)."""
        verdict = nodelife.readiness(self.seen, self.clock(), self.thresholds)
        for node, heartbeat in list(self.distrusted.items()):
            seen = self.seen.get(node)
            if seen is None or seen.heartbeat != heartbeat:
                del self.distrusted[node]  # heard again (or gone)
            else:
                verdict[node] = False
        return verdict if nodes is None else {n.name: verdict.get(n.name, True) for n in nodes}

    def ready(self, node: str) -> bool:
        """One node's verdict of ``readiness`` (one it has not seen counts as Ready, as there), without
        judging every node: the VM controller asks it for each VMI it reconciles."""
        seen = self.seen.get(node)
        if seen is None:
            return True
        if node in self.distrusted:
            return self.readiness().get(node, True)  # rare: the full judgement, which also forgets
        return nodelife.silent_for(seen, self.clock()) <= self.thresholds.ready_within

    async def run(self) -> None:
        """Watch forever: a watch that ends or fails is started again."""
        connection = asyncio.create_task(self._follow_connection())
        try:
            while True:
                try:
                    await self.prime()
                    async with asyncio.TaskGroup() as watches:  # one ends: both start again
                        watches.create_task(self._watch_nodes())
                        watches.create_task(self._watch_leases())
                        watches.create_task(self._watch_node_leases())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the watch is started again
                    log.warning("node watch ended; starting it again", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
                self.resume("node watch started again")
        finally:
            connection.cancel()

    async def _watch_nodes(self) -> None:
        async for change in self.store.nodes.watch():
            self.apply(change)
        raise RuntimeError("the node watch ended")

    async def _watch_node_leases(self) -> None:
        async for change in self.store.node_leases.watch():
            self.apply_node_lease(change)
        raise RuntimeError("the node lease watch ended")

    async def _watch_leases(self) -> None:
        async for change in self.store.vmi_leases.watch():
            self.apply_lease(change)
        raise RuntimeError("the lease watch ended")

    async def _follow_connection(self) -> None:
        was = True
        while True:
            await asyncio.sleep(CONNECTION_POLL_S)
            now = self.store.nc.is_connected
            if now and not was:
                self.resume("reconnected to NATS")
            was = now
