"""The binder's preemptions carried out (scheduler.preemption decides them): each victim evicted by CAS,
as a drain evicts (its VM runs it again elsewhere, no failure counted), with kube-scheduler's Preempted
event; the preemptor's room held on the node while they leave (its nomination), so that nothing of lower
priority takes it; the preemptor decided again as soon as the last of them has gone."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import structlog

from proto.errors import ApiError, Code
from proto.events import Event
from proto.state import FINAL_PHASES, VMI
from scheduler import preemption
from scheduler.affinityplan import Verdict
from scheduler.capacity import Assumption, CapacityIndex
from scheduler.eventsink import EventSink
from scheduler.networkneeds import NetworkNeeds
from scheduler.preemption import Nomination, Nominations
from scheduler.stopping import evicted
from scheduler.vmicache import VmiCache
from scheduler.vmiwrites import VmiWrites

log = structlog.get_logger()
# beyond its victims' grace periods, how long a nomination holds before the preemptor is decided afresh
# (a victim whose node went away never leaves)
NOMINATION_SLACK_S = 30.0
CAS_ATTEMPTS = 3


class Preempting:
    def __init__(self, bucket: VmiWrites, vmis: VmiCache, index: CapacityIndex, nominations: Nominations,
                 events: EventSink, clock: Callable[[], float]) -> None:
        self.bucket = bucket
        self.vmis = vmis
        self.index = index
        self.nominations = nominations
        self.events = events
        self.clock = clock
        self._reserved: dict[str, Assumption] = {}  # preemptor -> the room it holds on its nomination's node

    def observed(self, name: str, vmi: VMI | None) -> list[str]:
        """A VMI as the watch brought it (only while a nomination stands): the preemptors to decide again."""
        out = []
        if vmi is None or vmi.phase in FINAL_PHASES or vmi.node_name is None:  # a victim has left its node
            preemptor = self.nominations.gone(name)
            if preemptor is not None:
                out.append(preemptor)
        if (vmi is None or vmi.phase in FINAL_PHASES or vmi.stop_requested) and self.nominations.of(name):
            self.unreserve(name)  # a preemptor stopped or gone: the room it held is free again
            self.nominations.drop(name)
        return out

    def unreserve(self, name: str) -> None:
        """The room the preemptor holds, if any, given back (its decision is about to look again)."""
        reservation = self._reserved.pop(name, None)
        if reservation is not None:
            self.index.forget(name, reservation)

    async def preempt(self, vmi: VMI, priority: int, message: str, *, only: str | None, needs: NetworkNeeds,
                      affinity: Verdict | None) -> str:
        """For an instance that fits no node: wait for the victims it has, or choose and evict new
        ones; the Unschedulable message, saying which."""
        name = vmi.name
        nomination = self.nominations.of(name)
        if nomination is not None:
            if nomination.victims and time.monotonic() < nomination.until:
                self._reserve(vmi, priority, nomination.node)
                return (f"{message} Waiting for {len(nomination.victims)} preempted instance(s) to leave node "
                        f"{nomination.node}: {', '.join(sorted(nomination.victims))}.")
            self.nominations.drop(name)  # gone, yet it does not fit (taken meanwhile), or never gone
        lowest = self.index.lowest_priority()
        if lowest is None or lowest >= priority:
            return message
        chosen = preemption.plan(vmi.spec, priority, self.index.usages(), self.index.lower_than(priority),
                                 only=only, ovs=needs.ovs_bridges, bridges=needs.bridges, vlan_ports=needs.vlan_ports,
                                 affinity=affinity)
        if chosen is None:
            return f"{message} Preemption: no node where instances of lower priority could make room."
        graces: dict[str, int] = {}
        for victim in chosen.victims:
            grace = await self._evict(victim, name, priority, chosen.node)
            if grace is not None:
                graces[victim] = grace
        if not graces:
            return message  # each had changed meanwhile: decided again with the next change
        evicted_now = set(graces)
        nomination = Nomination(chosen.node, evicted_now, time.monotonic() + max(graces.values()) + NOMINATION_SLACK_S)
        self.nominations.nominate(name, nomination)
        self._reserve(vmi, priority, chosen.node)
        log.info("preempting", vmi=name, node=chosen.node, victims=sorted(evicted_now), priority=priority)
        return (f"{message} Preempting {len(evicted_now)} instance(s) of lower priority on node {chosen.node}: "
                f"{', '.join(sorted(evicted_now))}.")

    def _reserve(self, vmi: VMI, priority: int, node: str) -> None:
        if vmi.name not in self._reserved:
            held = msgspec.structs.replace(vmi, priority=priority or None)
            self._reserved[vmi.name] = self.index.assume(vmi.name, node, self.index.request(vmi), held)

    async def _evict(self, victim: str, preemptor: str, priority: int, node: str) -> int | None:
        """The victim evicted (its grace period, for how long to wait for it); None when it had ended,
        was leaving already, or kept changing."""
        entry = self.vmis.entries.get(victim)
        for _ in range(CAS_ATTEMPTS):
            if entry is None or entry.value.node_name != node:
                return None
            now = self.clock()
            new = evicted(entry.value, entry.value.uid, now, None)
            if new is None or entry.value.stop_requested:
                return None
            try:
                revision = await self.bucket.update(victim, new, entry.revision)
            except ApiError as exc:
                if exc.code is not Code.CONFLICT:
                    log.warning("victim not evicted", vmi=victim, preemptor=preemptor, error=exc.message)
                    return None
                entry = await self.bucket.get(victim)
                continue
            self.vmis.wrote(victim, new, revision)
            self.events.record(Event(kind="VirtualMachineInstance", name=victim, reason="Preempted",
                                     message=f"preempted by {preemptor} (priority {priority}) on node {node}",
                                     timestamp=now, node=node))
            return new.stop_grace_period if new.stop_grace_period is not None else \
                new.spec.termination_grace_period_seconds
        return None
