"""What a node tells the control plane (``virtbus.nodeapi.<node>.<verb>``), and the pure rules the
control plane applies before it writes anything (Kubernetes' NodeRestriction).

NATS lets only node N publish on ``virtbus.nodeapi.N.*`` (proto.permissions), so the subject names
the caller; the rules below make sure N changes nothing but the status of the VMIs bound to N.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proto.api import Message
from proto.errors import ApiError, Code
from proto.state import FINAL_PHASES, VMI, Condition, Phase, VMIInterface

VERB_REGISTER = "register"
VERB_STATUS = "status"
VERB_ATTACH = "attach"

# What a node may say of a VMI bound to it: that it runs, or how it ended.
REPORTABLE_PHASES = frozenset({Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED})


class Registration(Message, frozen=True):
    """A node's own description; the control plane adds its pod CIDR."""

    cpus: int
    memory: int
    kvm: bool
    labels: dict[str, str] = {}
    address: str | None = None


class EventNote(Message, frozen=True):
    reason: str
    message: str
    warning: bool = False


class StatusReport(Message, frozen=True):
    vmi: str
    uid: str
    phase: Phase | None = None
    reason: str = ""
    interfaces: list[VMIInterface] | None = None
    event: EventNote | None = None


class StatusReply(Message, frozen=True):
    applied: bool
    phase: Phase


class AttachRequest(Message, frozen=True):
    vmi: str
    uid: str


class SecondaryNic(Message, frozen=True):
    interface: str
    network: str
    bridge: str
    address: str  # with its prefix, e.g. 192.168.100.5/24


class AttachReply(Message, frozen=True):
    items: list[SecondaryNic]


def check_bound(vmi: VMI, node: str, uid: str) -> None:
    """Raises unless ``node`` runs this very instance."""
    if vmi.node_name != node:
        raise ApiError(Code.FORBIDDEN, f"VMI {vmi.name} is not bound to node {node}")
    if vmi.uid != uid:
        raise ApiError(Code.CONFLICT, f"VMI {vmi.name} is now instance {vmi.uid}, not {uid}")


def apply_report(vmi: VMI, report: StatusReport, node: str, now: float) -> VMI | None:
    """Pure: the VMI after the node's report, None when it changes nothing (an instance that has
    already finished keeps its end); raises ApiError for what the node may not say."""
    check_bound(vmi, node, report.uid)
    if report.phase is not None and report.phase not in REPORTABLE_PHASES:
        raise ApiError(Code.INVALID, f"a node reports Running, Succeeded or Failed, not {report.phase.value}",
                       "phase")
    if vmi.phase in FINAL_PHASES:
        return None
    changes: dict[str, Any] = {}
    if report.interfaces is not None:
        changes["interfaces"] = report.interfaces
    if report.reason:
        changes["reason"] = report.reason
    phase = report.phase
    if phase is not None and phase is not vmi.phase:
        changes["phase"] = phase
        ready = [c for c in vmi.conditions if c.type != "Ready"]
        if phase is Phase.RUNNING:
            changes["started_at"] = now
            changes["conditions"] = [*ready, Condition(type="Ready", status="True", last_transition_time=now)]
        else:
            changes["finished_at"] = now
            changes["conditions"] = [*ready, Condition(type="Ready", status="False", reason=phase.value,
                                                       last_transition_time=now)]
    new = msgspec.structs.replace(vmi, **changes)
    return None if new == vmi else new
