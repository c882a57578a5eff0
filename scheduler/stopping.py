"""How an instance is asked to stop (pure): by its owner (virtctl stop, a VM stopped or deleted), and
by an eviction (a drain, a preemption), which its VM answers by running it again elsewhere."""

from __future__ import annotations

import msgspec

from proto.state import FINAL_PHASES, VMI, Phase, grace_period


def stop_vmi(vmi: VMI, uid: str, now: float, grace: int | None = None) -> VMI | None:
    """That instance asked to stop; with grace (virtctl stop --force --grace-period), its guest given
    no more than that to power off, also when it was asked before (KubeVirt takes a shorter grace
    for a VM already stopping). None: nothing to change."""
    if vmi.uid != uid or vmi.phase in FINAL_PHASES:
        return None
    shorter = grace is not None and grace < grace_period(vmi)
    if vmi.stop_requested and not shorter:
        return None
    if vmi.node_name is None:
        # Nobody runs it yet, so nobody else will finish it.
        return msgspec.structs.replace(vmi, stop_requested=True, phase=Phase.SUCCEEDED, finished_at=now,
                                       reason="Stopped before it was scheduled")
    return msgspec.structs.replace(vmi, stop_requested=True, **({"stop_grace_period": grace} if shorter else {}))


def evicted(vmi: VMI, uid: str, now: float, grace: int | None) -> VMI | None:
    """That instance stopped and marked evicted; None when there is nothing to change (pure): another
    instance of the name, one that has ended, or one already evicted with no shorter grace asked."""
    if vmi.uid != uid or vmi.phase in FINAL_PHASES:
        return None
    stopping = stop_vmi(vmi, uid, now, grace)
    if stopping is None and vmi.evicted:
        return None
    return msgspec.structs.replace(stopping or vmi, evicted=True)
