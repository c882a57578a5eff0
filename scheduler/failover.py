"""Pure failover of high-availability VMIs (proto.fencing), on the scheduler's own monotonic clock.

The scheduler notes when it saw each launcher lease's revision change, as it does for heartbeats
(scheduler.nodelife). An HA instance whose lease it has not seen renewed for EXPIRE_AFTER_S is dead:
its launcher has killed its QEMU by then. It is marked Failed and ``fenced``, so the VM controller
replaces it at once (no crash-loop back-off: the VM did nothing wrong) without waiting for its node
to tear it down; the node kills and cleans up what is left when it is heard again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from proto import fencing, subjects
from proto.state import FINAL_PHASES, VMI, Condition, Phase

REASON = "NodeLostFencedOff"


@dataclass(frozen=True)
class LeaseSeen:
    uid: str
    revision: int
    since: float  # monotonic: when this revision was first seen (or watching began or resumed)


def observe(seen: LeaseSeen | None, uid: str, revision: int, now: float) -> LeaseSeen:
    if seen is None or seen.revision != revision or seen.uid != uid:
        return LeaseSeen(uid, revision, now)
    return seen


def resume(seen: Mapping[str, LeaseSeen], now: float) -> dict[str, LeaseSeen]:
    """Time the scheduler could not see the bus is no lease's silence."""
    return {key: LeaseSeen(s.uid, s.revision, now) for key, s in seen.items()}


def lapsed(leases: Mapping[str, LeaseSeen], vmi_of: Callable[[str], VMI | None],
           now: float) -> list[tuple[VMI, float]]:
    """The HA instances whose launcher's lease lapsed, with how long it has been silent. By the
    leases, not the instances: a second's check costs what the HA instances are, not every VMI."""
    out = []
    for key, seen in leases.items():
        vmi = _holder(key, seen, vmi_of)
        if vmi is not None and fencing.lapsed(now - seen.since):
            out.append((vmi, now - seen.since))
    return out


def stale(leases: Mapping[str, LeaseSeen], vmi_of: Callable[[str], VMI | None], now: float) -> list[str]:
    """Lapsed leases nobody needs: their instance is gone, replaced, bound elsewhere, finished or not HA."""
    return [key for key, seen in leases.items()
            if _holder(key, seen, vmi_of) is None and fencing.lapsed(now - seen.since)]


def _holder(key: str, seen: LeaseSeen, vmi_of: Callable[[str], VMI | None]) -> VMI | None:
    """The running HA instance this lease is of (its name, node and uid), None if none is."""
    node, name = subjects.vmi_lease_parts(key)
    vmi = vmi_of(name)
    if (vmi is None or not vmi.spec.high_availability or vmi.uid != seen.uid or vmi.node_name != node
            or vmi.phase in FINAL_PHASES):
        return None
    return vmi


def fail_over(vmi: VMI, uid: str, node: str, silent: float, now: float) -> VMI | None:
    """The instance, Failed and fenced; None when it is no longer the one whose lease lapsed."""
    if vmi.uid != uid or vmi.node_name != node or vmi.phase in FINAL_PHASES:
        return None
    reason = (f"node {node} lost: the instance's lease has not been renewed for {silent:.0f}s, "
              f"so its launcher has killed it; running it again elsewhere")
    ready = Condition(type="Ready", status="False", reason=REASON, message=reason, last_transition_time=now)
    return msgspec.structs.replace(vmi, phase=Phase.FAILED, fenced=True, reason=reason, finished_at=now,
                                   phase_before_unknown=None,
                                   conditions=[*(c for c in vmi.conditions if c.type != "Ready"), ready])
