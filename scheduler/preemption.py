"""Preemption, pure (kube-scheduler's DefaultPreemption): an instance that fits no node may take the place
of instances of lower priority (proto.priorities) on one node.

For each node: with every lower-priority instance there gone, would it fit (every other filter
included: readiness, cordons, taints, selectors, affinity)? If so, the victims are as few as will do:
the lower instances are given back one by one, the highest priority (then the oldest) first, each kept
if the preemptor still fits beside it. Of the nodes where it works, the one whose victims matter least
is chosen: the lowest highest victim priority, then the lowest sum of their priorities, then the fewest
victims, then the name. The binder evicts the victims (their VMs run them again elsewhere, as a drain's
evictions do) and binds the preemptor once they have gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.priorities import LOWEST_PRIORITY
from proto.spec import VMSpec
from scheduler.affinityplan import Verdict
from scheduler.placement import NodeUsage, Request, tie_key, unfit_reason


@dataclass(frozen=True, slots=True)
class Running:
    """An instance bound to a node, of lower priority than the one being placed."""

    name: str
    node: str
    request: Request
    priority: int
    created_at: float


@dataclass(frozen=True)
class Preemption:
    node: str
    victims: tuple[str, ...]  # by name, the lowest priority first


def plan(spec: VMSpec, priority: int, nodes: Iterable[NodeUsage], lower: Mapping[str, list[Running]], *,
         only: str | None = None, ovs: frozenset[str] = frozenset(), bridges: frozenset[str] = frozenset(),
         vlan_ports: bool = False, affinity: Verdict | None = None) -> Preemption | None:
    """Where ``spec`` (of ``priority``) would fit once the fewest lower instances (``lower``, by node) were
    gone; None when nowhere. The other arguments are placement.place's."""
    want = Request.of(spec)

    def fits(u: NodeUsage, gone: list[Running]) -> bool:
        return unfit_reason(spec, _without(u, gone), only, ovs, want, bridges, vlan_ports, affinity) is None

    best: tuple[tuple[int, int, int, str], Preemption] | None = None
    for u in nodes:
        candidates = [r for r in lower.get(u.node.name, ()) if r.priority < priority]
        if not candidates or not fits(u, candidates):
            continue
        victims = list(candidates)
        for reprieved in sorted(candidates, key=lambda r: (-r.priority, r.created_at)):
            remaining = [r for r in victims if r is not reprieved]
            if fits(u, remaining):
                victims = remaining
        if not victims:  # it fits as it is: placement's business, not preemption's
            continue
        victims.sort(key=lambda r: (r.priority, -r.created_at))
        key = (max(r.priority for r in victims), sum(r.priority - LOWEST_PRIORITY for r in victims), len(victims),
               tie_key(u.node.name))
        if best is None or key < best[0]:
            best = (key, Preemption(u.node.name, tuple(r.name for r in victims)))
    return best[1] if best is not None else None


def _without(u: NodeUsage, gone: list[Running]) -> NodeUsage:
    """The node's usage with those instances gone."""
    return dataclasses.replace(u, used_memory=u.used_memory - sum(r.request.memory for r in gone),
                               used_vcpus=u.used_vcpus - sum(r.request.vcpus for r in gone),
                               vmis=u.vmis - len(gone), used_disk=u.used_disk - sum(r.request.disk for r in gone))


@dataclass
class Nomination:
    """A preemptor's claim on the node its victims are leaving (kube-scheduler's nominatedNodeName):
    the binder holds its request there meanwhile (scheduler.preempting), so that no instance of lower
    priority takes the room made for it."""

    node: str
    victims: set[str]  # those not gone yet
    until: float  # (monotonic) then it is decided afresh, gone or not: a victim may never leave


class Nominations:
    """The preemptors waiting for their victims, and who waits for whom (pure bookkeeping)."""

    def __init__(self) -> None:
        self._of: dict[str, Nomination] = {}
        self._waiting_for: dict[str, str] = {}  # victim -> its preemptor

    def __bool__(self) -> bool:
        return bool(self._of)

    def nominate(self, preemptor: str, nomination: Nomination) -> None:
        self.drop(preemptor)
        self._of[preemptor] = nomination
        for victim in nomination.victims:
            self._waiting_for[victim] = preemptor

    def of(self, preemptor: str) -> Nomination | None:
        return self._of.get(preemptor)

    def drop(self, preemptor: str) -> Nomination | None:
        nomination = self._of.pop(preemptor, None)
        if nomination is not None:
            for victim in nomination.victims:
                if self._waiting_for.get(victim) == preemptor:
                    del self._waiting_for[victim]
        return nomination

    def gone(self, victim: str) -> str | None:
        """A victim has left its node: the preemptor to decide again once none of its victims is left."""
        preemptor = self._waiting_for.pop(victim, None)
        if preemptor is None:
            return None
        nomination = self._of[preemptor]
        nomination.victims.discard(victim)
        return preemptor if not nomination.victims else None
