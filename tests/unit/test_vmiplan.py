"""The node's plan for one VMI (handler.vmiplan), fault by fault: what the handler does when its
launcher died, won a race, belongs to an earlier run, or runs an instance failed over elsewhere."""

from __future__ import annotations

import signal

import msgspec
import pytest

from handler.vmiplan import FAILED_OVER_GRACE_S, Act, Seen, Step, plan
from proto.spec import VMSpec
from proto.state import VMI, MigrationPhase, MigrationState, Phase

NODE = "node1"


def vmi(phase: Phase = Phase.RUNNING, node: str | None = NODE, uid: str = "u1", **kw: object) -> VMI:
    ha = bool(kw.pop("ha", False))
    return VMI(name="vm1", uid=uid, spec=VMSpec(name="vm1", high_availability=ha), created_at=0.0, phase=phase,
               node_name=node, **kw)  # type: ignore[arg-type]


def alive(uid: str = "u1") -> Seen:
    return Seen(uid=uid, alive=True)


def exited(code: int | None, uid: str = "u1") -> Seen:
    return Seen(uid=uid, alive=False, exit_code=code)


def steps(acts: list[Act]) -> list[Step]:
    return [a.step for a in acts]


def test_a_running_launcher_is_left_alone() -> None:
    assert plan(vmi(), alive(), NODE) == []


def test_bound_here_and_scheduled_spawns_once() -> None:
    assert steps(plan(vmi(Phase.SCHEDULED), None, NODE)) == [Step.SPAWN]
    assert plan(vmi(Phase.SCHEDULED), alive(), NODE) == []  # already spawned: nothing twice


@pytest.mark.parametrize(("code", "why"), [
    (-signal.SIGKILL, "launcher killed by SIGKILL"), (3, "launcher exited (code 3)"), (None, "launcher exited")])
def test_a_launcher_that_died_fails_its_instance_with_the_reason_after_clearing_up(code: int | None, why: str) -> None:
    acts = plan(vmi(), exited(code), NODE)
    assert steps(acts) == [Step.FORGET, Step.REPORT_END]
    assert (acts[1].phase, acts[1].why, acts[1].torn_down) == (Phase.FAILED, why, True)


def test_a_launcher_that_ended_a_finished_run_reports_it_torn_down() -> None:
    assert steps(plan(vmi(Phase.SUCCEEDED), exited(0), NODE)) == [Step.FORGET, Step.REPORT_TORN_DOWN]
    # said once: a torn-down instance only has its leftovers cleared (idempotent)
    assert steps(plan(vmi(Phase.SUCCEEDED), None, NODE)) == [Step.FORGET, Step.REPORT_TORN_DOWN]
    assert steps(plan(vmi(Phase.SUCCEEDED, torn_down=True), None, NODE)) == [Step.FORGET]


def test_running_with_no_launcher_here_was_lost_while_the_handler_was_away() -> None:
    acts = plan(vmi(Phase.RUNNING), None, NODE)
    assert steps(acts) == [Step.REPORT_END] and acts[0].phase is Phase.FAILED and "away" in acts[0].why


def test_a_stop_before_any_launcher_ran_it_finishes_it() -> None:
    acts = plan(vmi(Phase.SCHEDULED, stop_requested=True), None, NODE)
    assert steps(acts) == [Step.REPORT_END] and acts[0].phase is Phase.SUCCEEDED and acts[0].torn_down


def test_the_loser_of_a_launcher_race_hands_over_to_the_winner() -> None:
    lost = Seen(uid="u1", alive=False, lost_the_race=True, exit_code=75)
    assert steps(plan(vmi(Phase.SCHEDULED), lost, NODE)) == [Step.ADOPT]  # nothing cleared from under it


def test_a_launcher_of_an_earlier_run_is_ended_before_the_new_one() -> None:
    # its record went without this node's tear-down: the control plane gave that run up
    acts = plan(vmi(Phase.SCHEDULED, uid="u2"), alive("u1"), NODE)
    assert steps(acts) == [Step.KILL_GUEST, Step.END_LAUNCHER, Step.FORGET, Step.SPAWN]
    # an earlier run's launcher that has exited is only cleared away
    assert steps(plan(vmi(Phase.SCHEDULED, uid="u2"), exited(0, "u1"), NODE)) == [
        Step.END_LAUNCHER, Step.FORGET, Step.SPAWN]


@pytest.mark.parametrize("gone", [None, vmi(node="node2", uid="u2")])
def test_a_run_given_up_while_its_launcher_runs_has_its_guest_killed_at_once(gone: VMI | None) -> None:
    """A record goes only after its node tore it down, unless the control plane gave the run up
    (fenced, or its node not Ready): the guest may run elsewhere by now, HA or not."""
    acts = plan(gone, alive(), NODE)
    assert steps(acts) == [Step.KILL_GUEST, Step.END_LAUNCHER, Step.FORGET, Step.RELEASE_ADDRESS]
    assert acts[1].grace == FAILED_OVER_GRACE_S


@pytest.mark.parametrize("failed_over", [
    vmi(node="node2", uid="u2", ha=True),  # run again on another node
    vmi(Phase.FAILED, ha=True, fenced=True),  # fenced, not yet replaced
    vmi(Phase.FAILED, fenced=True),  # not HA: given up with its node, deleted as lost (node.delete)
])
def test_a_failed_over_ha_instance_has_its_guest_killed_here_at_once(failed_over: VMI) -> None:
    acts = plan(failed_over, alive(), NODE)  # the launcher is alive: frozen, or cut off
    assert steps(acts)[:3] == [Step.KILL_GUEST, Step.END_LAUNCHER, Step.FORGET]
    assert acts[1].grace == FAILED_OVER_GRACE_S
    assert Step.SPAWN not in steps(acts)


def test_without_a_launcher_a_failed_over_instance_needs_no_kill() -> None:
    assert Step.KILL_GUEST not in steps(plan(vmi(node="node2", uid="u2", ha=True), None, NODE))


def migrating(phase: MigrationPhase, target: str | None = NODE, source: str = "other") -> VMI:
    state = MigrationState(migration_uid="m1", migration_name="mig", source_node=source, phase=phase,
                           start_timestamp=1.0, target_node=target)
    return vmi(Phase.RUNNING, node=source, migration_state=state)


def test_an_instance_migrating_here_gets_a_target_launcher_once_its_target_is_chosen() -> None:
    assert steps(plan(migrating(MigrationPhase.SCHEDULED), None, NODE)) == [Step.SPAWN_TARGET]
    assert steps(plan(migrating(MigrationPhase.SCHEDULED), alive(), NODE)) == []  # not ended: it waits
    assert steps(plan(migrating(MigrationPhase.RUNNING), alive(), NODE)) == []
    # migrating elsewhere, or not yet placed: nothing of it runs here
    assert steps(plan(migrating(MigrationPhase.SCHEDULED, target="node3"), None, NODE)) == [Step.FORGET,
                                                                                          Step.RELEASE_ADDRESS]


def test_a_lost_target_launcher_fails_the_migration_not_the_instance() -> None:
    acts = plan(migrating(MigrationPhase.TARGET_READY), exited(-9), NODE)
    assert steps(acts) == [Step.FORGET, Step.REPORT_MIGRATION_FAILED]
    assert acts[-1].why == "the target's launcher killed by SIGKILL"
    assert steps(plan(migrating(MigrationPhase.RUNNING), None, NODE)) == [Step.REPORT_MIGRATION_FAILED]
    assert Step.REPORT_END not in steps(acts)


def test_a_target_launcher_whose_migration_ended_is_ended() -> None:
    failed = migrating(MigrationPhase.FAILED)
    assert steps(plan(failed, alive(), NODE)) == [Step.END_LAUNCHER, Step.FORGET, Step.RELEASE_ADDRESS]


def test_a_guest_that_moved_here_is_its_launchers_and_the_one_it_left_is_ended() -> None:
    moved = migrating(MigrationPhase.SUCCEEDED)
    arrived = msgspec.structs.replace(moved, node_name=NODE)
    assert steps(plan(arrived, alive(), NODE)) == []  # the target's launcher runs it now
    assert steps(plan(arrived, alive(), "other")) == [Step.END_LAUNCHER, Step.FORGET, Step.RELEASE_ADDRESS]


def test_a_source_launcher_lost_while_moving_the_guest_fails_the_migration_not_the_instance_yet() -> None:
    moving = migrating(MigrationPhase.RUNNING, target="other", source=NODE)
    acts = plan(moving, exited(-9), NODE)
    assert steps(acts) == [Step.FORGET, Step.REPORT_MIGRATION_FAILED]
    assert acts[-1].why == "the source's launcher killed by SIGKILL"
    # not yet moving: as any lost launcher, the instance failed
    assert Step.REPORT_END in steps(plan(migrating(MigrationPhase.TARGET_READY, target="other", source=NODE),
                                         exited(-9), NODE))
