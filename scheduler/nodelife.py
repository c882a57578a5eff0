"""Pure node lifecycle, on the scheduler's own monotonic clock.

A node's heartbeat is its handler's wall-clock timestamp; comparing it with the scheduler's clock
would make a skewed clock look like a dead node. So the scheduler only notes *when it saw the
heartbeat change*, on its own monotonic clock, and a node is silent for as long as it has not.
Time the scheduler itself could not see the bus (disconnected, or not leading) is not counted:
``resume`` starts every node's silence afresh.

A silent node is NotReady (nothing new is placed there) and, past ``lost_after``, its VMIs are
Unknown: not Failed, since their guests may well run on, and nothing may replace or delete them
until it is certain they stopped. Once the node is heard again they return to the phase they had;
any report the node still owes (its launchers retry theirs) then lands on top.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from proto.nodeapi import running_ready
from proto.state import FINAL_PHASES, NODE_LEASE_RENEW_S, VMI, Condition, Phase

UNREACHABLE = "NodeUnreachable"
# Less silence than three of a node's renewals is no sign of anything: one renewal late or lost, on a
# busy node or bus, would take a healthy node's VMIs to Unknown.
MIN_SILENCE_S = 3 * NODE_LEASE_RENEW_S


@dataclass(frozen=True)
class Thresholds:
    ready_within: float = MIN_SILENCE_S  # silent longer: NotReady, nothing new placed there
    lost_after: float = 40.0  # silent longer: its VMIs are Unknown

    @classmethod
    def lost_after_s(cls, lost_after: float) -> Thresholds:
        """One knob (``--node-lost-after``): NotReady no later than lost."""
        return cls(ready_within=min(cls.ready_within, lost_after), lost_after=lost_after)


@dataclass(frozen=True)
class Seen:
    heartbeat: float  # the node's own timestamp: only ever compared with itself, for a change
    since: float  # the scheduler's monotonic clock when it changed (or when watching began or resumed)
    beating: bool = False  # seen changing, not just read once: proof that someone heartbeats


def observe(seen: Seen | None, heartbeat: float, now: float) -> Seen:
    """The node as of a record read at ``now``. First sight counts as a beat for placement (a node
    registered a moment ago must be usable), but not as proof of life (``beating``)."""
    if seen is None:
        return Seen(heartbeat, now)
    if heartbeat != seen.heartbeat:
        return Seen(heartbeat, now, beating=True)
    return seen


def resume(seen: Mapping[str, Seen], now: float) -> dict[str, Seen]:
    """The scheduler sees the bus again: how long it could not is no node's silence."""
    return {name: Seen(s.heartbeat, now, s.beating) for name, s in seen.items()}


def silent_for(s: Seen, now: float) -> float:
    return max(now - s.since, 0.0)


def readiness(seen: Mapping[str, Seen], now: float, t: Thresholds) -> dict[str, bool]:
    return {name: silent_for(s, now) <= t.ready_within for name, s in seen.items()}


class Transition(enum.Enum):
    TO_UNKNOWN = "to-unknown"
    RESTORE = "restore"


def plan(vmis: Iterable[VMI], seen: Mapping[str, Seen], now: float, t: Thresholds) -> list[tuple[VMI, Transition]]:
    """Which VMIs change because of their node: Unknown on a lost node, back on a node heard again.
    A VMI on a node the scheduler has no record of stays as it is (the record may be on its way)."""
    out = []
    for vmi in vmis:
        s = seen.get(vmi.node_name) if vmi.node_name else None
        if s is None or vmi.phase in FINAL_PHASES:
            continue
        quiet = silent_for(s, now)
        if vmi.phase is Phase.UNKNOWN:
            if s.beating and quiet <= t.ready_within:
                out.append((vmi, Transition.RESTORE))
        elif quiet > t.lost_after:
            out.append((vmi, Transition.TO_UNKNOWN))
    return out


def lost(seen: Mapping[str, Seen], now: float, t: Thresholds) -> set[str]:
    """The nodes silent past ``lost_after``: their VMIs become Unknown."""
    return {name for name, s in seen.items() if silent_for(s, now) > t.lost_after}


class Watched:
    """Which VMIs ``plan`` can move, kept as the leader's VMI cache changes (its listener): those
    bound to each node, and the Unknown ones. Only a lost node's VMIs and the Unknown ones can
    change, so the second's check reads those, not every VMI of the cluster (with 10,000 VMIs on 1,000
    healthy nodes, those checks were a third of the leader's busy time when nothing happened)."""

    def __init__(self) -> None:
        self.by_node: dict[str, set[str]] = {}
        self.unknown: set[str] = set()
        self._node_of: dict[str, str] = {}

    def apply(self, name: str, vmi: VMI | None) -> None:
        node = vmi.node_name if vmi is not None and vmi.phase not in FINAL_PHASES else None
        old = self._node_of.get(name)
        if old != node:
            if old is not None:
                names = self.by_node[old]
                names.discard(name)
                if not names:
                    del self.by_node[old]
                del self._node_of[name]
            if node is not None:
                self.by_node.setdefault(node, set()).add(name)
                self._node_of[name] = node
        if vmi is not None and vmi.phase is Phase.UNKNOWN:
            self.unknown.add(name)
        else:
            self.unknown.discard(name)

    def candidates(self, lost_nodes: Iterable[str]) -> set[str]:
        """The VMIs ``plan`` may move when these nodes are lost: theirs, and every Unknown one."""
        out = set(self.unknown)
        for node in lost_nodes:
            out |= self.by_node.get(node, set())
        return out


def mark_unknown(vmi: VMI, uid: str, silent: float, now: float) -> VMI | None:
    """The VMI once its node is lost (None: nothing to change). ``now`` is the wall clock, for people."""
    if vmi.uid != uid or vmi.node_name is None or vmi.phase in FINAL_PHASES or vmi.phase is Phase.UNKNOWN:
        return None
    cond = Condition(type="Ready", status="Unknown", reason=UNREACHABLE, last_transition_time=now,
                     message=f"node {vmi.node_name} has not reported for {silent:.0f}s; the guest may still run")
    return msgspec.structs.replace(vmi, phase=Phase.UNKNOWN, phase_before_unknown=vmi.phase,
                                   conditions=[*(c for c in vmi.conditions if c.type != "Ready"), cond])


def restore(vmi: VMI, uid: str, now: float) -> VMI | None:
    """The VMI once its node is heard again: the phase it had (None: nothing to change)."""
    if vmi.uid != uid or vmi.phase is not Phase.UNKNOWN or vmi.phase_before_unknown is None:
        return None
    phase = vmi.phase_before_unknown
    others = [c for c in vmi.conditions if c.type != "Ready"]
    ready = [running_ready(vmi, now, reason="NodeReachable")] if phase is Phase.RUNNING else []
    return msgspec.structs.replace(vmi, phase=phase, phase_before_unknown=None, conditions=[*others, *ready])
