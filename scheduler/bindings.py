"""A binder decision's values: the VMI as bound to its node, or as Unschedulable with the reason,
the event each records, and what a migration's target holds in the capacity index. Pure: the binder
(scheduler.binder) writes them."""

from __future__ import annotations

import msgspec

from proto import migrations
from proto.events import Event
from proto.priorities import Priority
from proto.state import FINAL_PHASES, VMI, Condition, Phase
from scheduler import placement


def bound_to(vmi: VMI, choice: placement.Placement, priority: Priority, now: float) -> VMI:
    cond = Condition(type="PodScheduled", status="True", reason="Scheduled",
                     message=f"bound to {choice.node} ({choice.message})", last_transition_time=now)
    return msgspec.structs.replace(vmi, phase=Phase.SCHEDULED, node_name=choice.node, conditions=_with(vmi, cond),
                                   priority=priority.value or None)


def unschedulable(vmi: VMI, message: str, now: float) -> VMI | None:
    """Its Unschedulable condition saying why; None if it says so already (nothing to write)."""
    old = next((c for c in vmi.conditions if c.type == "PodScheduled"), None)
    if vmi.phase is Phase.SCHEDULING and old is not None and old.message == message:
        return None
    cond = Condition(type="PodScheduled", status="False", reason="Unschedulable", message=message,
                     last_transition_time=now)
    return msgspec.structs.replace(vmi, phase=Phase.SCHEDULING, conditions=_with(vmi, cond))


def event(name: str, reason: str, message: str, at: float, *, warning: bool = False,
          node: str | None = None) -> Event:
    return Event(kind="VirtualMachineInstance", name=name, reason=reason, message=message, timestamp=at,
                 type="Warning" if warning else "Normal", node=node)


def as_target(vmi: VMI | None) -> VMI | None:
    """What a migration's target holds, as the index sees it: the instance on its target node while its
    migration is under way; unbound otherwise (which lets an assumption being written stand)."""
    if vmi is None or vmi.phase in FINAL_PHASES:
        return None
    return msgspec.structs.replace(vmi, node_name=migrations.target_of(vmi))


def _with(vmi: VMI, cond: Condition) -> list[Condition]:
    return [*(c for c in vmi.conditions if c.type != cond.type), cond]
