"""Pure node-side VMI logic: from the VMI as stored and its launcher as seen here, what the handler
does next (the node's twin of scheduler/vmplan.py).

The agent (handler/agent.py) carries the steps out in order, serially per VMI; a step that fails
with a retryable error ends the pass and the work queue tries again, so every step is idempotent.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from proto.migrations import in_flight
from proto.state import FINAL_PHASES, VMI, MigrationPhase, MigrationState, Phase

# A failed-over instance's launcher has nothing left to stop in order: it gets this long, not a
# guest's grace period, so a frozen one does not hold up the VM's next run here.
FAILED_OVER_GRACE_S = 5.0
GRACE_S = 60.0  # a launcher asked to end: its guest's ACPI shutdown and its clean-up


@dataclass(frozen=True)
class Seen:
    """A launcher as this node sees it."""

    uid: str
    alive: bool
    lost_the_race: bool = False  # it found another launcher running its VMI and left
    exit_code: int | None = None  # None: still running, or adopted (not our child)


class Step(enum.Enum):
    KILL_GUEST = "kill-guest"  # SIGKILL its QEMU now, whatever its launcher does
    END_LAUNCHER = "end-launcher"  # SIGTERM, then SIGKILL after the grace
    FORGET = "forget"  # clear its pod, processes and files away
    RELEASE_ADDRESS = "release-address"  # its pod IP, unless its VM still exists
    ADOPT = "adopt"  # the launcher that won the race runs it: adopt that one
    SPAWN = "spawn"  # a launcher for the instance bound here
    REPORT_END = "report-end"  # the instance's end, which its launcher could not report
    REPORT_TORN_DOWN = "report-torn-down"  # nothing of the finished run is left here
    SPAWN_TARGET = "spawn-target"  # a launcher for the instance migrating here (proto.migrations)
    REPORT_MIGRATION_FAILED = "report-migration-failed"  # its target launcher here is lost


@dataclass(frozen=True)
class Act:
    step: Step
    why: str = ""
    grace: float = GRACE_S
    phase: Phase | None = None  # REPORT_END: Failed or Succeeded
    torn_down: bool = False  # REPORT_END: said after FORGET, so nothing is left


def plan(vmi: VMI | None, launcher: Seen | None, node: str) -> list[Act]:
    acts: list[Act] = []
    if launcher is not None and (given_up(vmi, launcher) or failed_over(vmi, node)):
        # It runs (or is about to run) elsewhere: its copy here dies now, not after an orderly
        # stop, even if its launcher cannot fence it itself (frozen, say).
        why = "the instance was failed over" if failed_over(vmi, node) else "the control plane gave this run up"
        acts += [Act(Step.KILL_GUEST, why), Act(Step.END_LAUNCHER, why, grace=FAILED_OVER_GRACE_S),
                 Act(Step.FORGET)]
        launcher = None
    coming = migrating_here(vmi, node)
    if vmi is not None and coming is not None:
        return [*acts, *_target(vmi, coming, launcher)]
    if vmi is None or vmi.node_name != node:
        if launcher is not None:  # an exited launcher of a run gone: nothing left to stop
            acts += [Act(Step.END_LAUNCHER, "the instance is gone or bound elsewhere"), Act(Step.FORGET)]
        if not acts:
            acts.append(Act(Step.FORGET))  # whatever an earlier handler left
        return [*acts, Act(Step.RELEASE_ADDRESS)]
    if launcher is not None and launcher.uid != vmi.uid:
        acts += [Act(Step.END_LAUNCHER, f"it ran an earlier instance ({launcher.uid})"), Act(Step.FORGET)]
        launcher = None
    if launcher is not None and launcher.alive:
        return acts
    if launcher is not None and launcher.lost_the_race:
        # Another launcher already runs this VMI (spawned by a handler that died before it noted
        # it): adopt that one; clearing up here would pull its pod from under it.
        return [*acts, Act(Step.ADOPT)]
    if launcher is not None:  # it exited
        acts.append(Act(Step.FORGET))
        moving = in_flight(vmi)
        if moving is not None and moving.phase is MigrationPhase.RUNNING:
            # It was moving the guest: the migration fails, unless its target has said the guest runs
            # there (then this word changes nothing, and the instance is the target's).
            return [*acts, Act(Step.REPORT_MIGRATION_FAILED,
                               f"the source's {launcher_exit_reason(launcher.exit_code)}")]
        if vmi.phase not in FINAL_PHASES:
            return [*acts, Act(Step.REPORT_END, launcher_exit_reason(launcher.exit_code), phase=Phase.FAILED,
                               torn_down=True)]
        return [*acts, Act(Step.REPORT_TORN_DOWN)]
    if vmi.phase in FINAL_PHASES:
        return [*acts, Act(Step.FORGET), *([] if vmi.torn_down else [Act(Step.REPORT_TORN_DOWN)])]
    if vmi.phase is Phase.SCHEDULED and vmi.stop_requested:
        # Asked to stop before any launcher ran it: nobody else would ever finish it.
        return [*acts, Act(Step.REPORT_END, "stopped before it started", phase=Phase.SUCCEEDED, torn_down=True)]
    if vmi.phase is Phase.SCHEDULED:
        return [*acts, Act(Step.SPAWN)]
    if vmi.phase is Phase.RUNNING:
        # Running, bound here, no launcher: it died while no handler watched.
        return [*acts, Act(Step.REPORT_END, "launcher lost while the handler was away", phase=Phase.FAILED)]
    return acts


def migrating_here(vmi: VMI | None, node: str) -> MigrationState | None:
    """The migration under way that has chosen this node for an instance running elsewhere."""
    state = in_flight(vmi)
    return state if vmi is not None and state is not None and state.target_node == node \
        and vmi.node_name != node else None


def _target(vmi: VMI, state: MigrationState, launcher: Seen | None) -> list[Act]:
    """The launcher an instance migrating here moves to: started once the target is chosen, and its
    loss the migration's failure (the guest runs on at its source)."""
    acts: list[Act] = []
    if launcher is not None and launcher.uid != vmi.uid:
        acts += [Act(Step.END_LAUNCHER, f"it ran an earlier instance ({launcher.uid})"), Act(Step.FORGET)]
        launcher = None
    if launcher is None:
        if state.phase is MigrationPhase.SCHEDULED:
            return [*acts, Act(Step.SPAWN_TARGET)]
        return [*acts, Act(Step.REPORT_MIGRATION_FAILED, "the target's launcher was lost")]
    if launcher.alive:
        return acts
    if launcher.lost_the_race:
        return [*acts, Act(Step.ADOPT)]
    return [*acts, Act(Step.FORGET),
            Act(Step.REPORT_MIGRATION_FAILED, f"the target's {launcher_exit_reason(launcher.exit_code)}")]


def given_up(vmi: VMI | None, launcher: Seen) -> bool:
    """A launcher still running a run whose record is gone, or replaced by another run's. A run's
    record goes only after its node has torn it down (the finalizer, proto.state.VMI.torn_down),
    unless the control plane gave the run up: fenced, or its node not Ready. Either way it may be
    running elsewhere by now, and this copy must not run on."""
    return launcher.alive and (vmi is None or vmi.uid != launcher.uid)


def failed_over(vmi: VMI | None, node: str) -> bool:
    """An instance that its launcher here must no longer run: fenced (an HA instance whose lease
    lapsed, or one given up with its node, deleted as lost: scheduler.nodemaintenance), or an HA
    instance bound elsewhere now."""
    return vmi is not None and (vmi.fenced or (vmi.spec.high_availability and vmi.node_name != node))


def launcher_exit_reason(code: int | None) -> str:
    """Why a launcher that left its instance unfinished ended, from its exit status (None: it was
    adopted from an earlier handler, whose child it was)."""
    if code is None:
        return "launcher exited"
    if code < 0:
        try:
            return f"launcher killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"launcher killed by signal {-code}"
    return f"launcher exited (code {code})"
