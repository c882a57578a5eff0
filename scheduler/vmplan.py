"""Pure VM controller logic: from a VM and its instance, what to do next (KubeVirt's run strategies).

The shell applies at most one action per reconcile and reconciles again on the change it caused,
so every step is idempotent and a crash between steps loses nothing.
"""

from __future__ import annotations

import enum

from proto.nodeapi import CONDITION_PAUSED
from proto.spec import RunStrategy
from proto.state import FINAL_PHASES, VM, VMI, Phase


class Action(enum.Enum):
    NOTHING = "nothing"
    CREATE_VMI = "create-vmi"
    STOP_VMI = "stop-vmi"  # ask the launcher for an ACPI shutdown
    DELETE_VMI = "delete-vmi"  # only once it is final and its node has torn it down
    AWAIT_TEARDOWN = "await-teardown"  # final, but its node still holds its launcher or pod
    CLEAR_START_REQUEST = "clear-start-request"
    RESET_FAILURES = "reset-failures"  # a run got going: the crash loop is over


BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 300.0


def backoff(failures: int) -> float:
    """Seconds to wait before the next run after this many failed runs in a row."""
    return 0.0 if failures <= 0 else min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)


def plan(vm: VM | None, vmi: VMI | None, now: float = 0.0, node_ready: bool = True) -> Action:
    """node_ready: whether the VMI's node is Ready (scheduler.nodelife); a node that is not will not
    tear anything down soon, so its finished instances go without waiting for it."""
    action = _plan(vm, vmi, now)
    if action is Action.DELETE_VMI and vmi is not None and not _released(vmi, node_ready):
        return Action.AWAIT_TEARDOWN
    return action


def _released(vmi: VMI, node_ready: bool) -> bool:
    return vmi.node_name is None or vmi.torn_down or vmi.fenced or not node_ready


def _plan(vm: VM | None, vmi: VMI | None, now: float) -> Action:
    if vm is None and vmi is not None and vmi.standalone:
        # nobody's instance: it runs, and stays once ended, until it is deleted
        return _wind_down(vmi) if vmi.deleting else Action.NOTHING
    if vm is None:
        return _wind_down(vmi)
    if vmi is not None and vm.restart_of == vmi.uid:
        return _wind_down(vmi)
    strategy = vm.spec.run_strategy
    if strategy is RunStrategy.HALTED:
        return _wind_down(vmi)
    if vmi is None:
        if strategy is RunStrategy.MANUAL and not vm.start_requested and vm.restart_of is None:
            return Action.NOTHING
        if now < vm.next_start_at:
            return Action.NOTHING  # backing off; the controller looks again at next_start_at
        return Action.CREATE_VMI
    if vmi.phase is Phase.UNKNOWN:
        # Its node is silent (scheduler.nodelife): the guest may well run on, so it is neither
        # replaced nor deleted until the node is heard again and says how it is.
        return Action.NOTHING
    if vmi.phase is Phase.RUNNING and vm.failures:
        return Action.RESET_FAILURES
    if strategy is RunStrategy.MANUAL and vm.start_requested:
        return Action.CLEAR_START_REQUEST
    if vmi.phase in FINAL_PHASES:
        if strategy is RunStrategy.ALWAYS:
            return Action.DELETE_VMI
        # an eviction (virtbus drain) is no choice of the guest's to stop: RerunOnFailure runs it again
        if strategy is RunStrategy.RERUN_ON_FAILURE and (vmi.phase is Phase.FAILED or vmi.evicted):
            return Action.DELETE_VMI
    return Action.NOTHING


def _wind_down(vmi: VMI | None) -> Action:
    if vmi is None:
        return Action.NOTHING
    if vmi.phase in FINAL_PHASES:
        return Action.DELETE_VMI
    if not vmi.stop_requested:
        return Action.STOP_VMI
    return Action.NOTHING


def printable_status(vm: VM, vmi: VMI | None, now: float = 0.0) -> str:
    """KubeVirt's ``printableStatus`` column."""
    strategy = vm.spec.run_strategy
    if vmi is None and strategy is not RunStrategy.HALTED and now < vm.next_start_at:
        return "CrashLoopBackOff"
    if vmi is None:
        if strategy is RunStrategy.HALTED or (strategy is RunStrategy.MANUAL and not vm.start_requested):
            return "Stopped"
        return "Starting"
    if vmi.stop_requested and vmi.phase not in FINAL_PHASES:
        return "Stopping"
    if vmi.phase is Phase.RUNNING:
        # KubeVirt's: a paused guest's instance stays Running, its VM prints Paused
        paused = any(c.type == CONDITION_PAUSED and c.status == "True" for c in vmi.conditions)
        return "Paused" if paused else "Running"
    if vmi.phase is Phase.SUCCEEDED:
        return "Stopped"
    if vmi.phase is Phase.FAILED:
        return "CrashLoopBackOff" if strategy is RunStrategy.ALWAYS else "Failed"
    if vmi.phase is Phase.UNKNOWN:
        return "Unknown"
    if any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in vmi.conditions):
        return "ErrorUnschedulable"
    return "Starting"
