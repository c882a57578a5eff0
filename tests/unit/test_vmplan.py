import pytest

from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Condition, Phase
from scheduler.vmplan import Action, plan, printable_status


def vm(strategy: RunStrategy, **kw: object) -> VM:
    return VM(spec=VMSpec(name="t", run_strategy=strategy), created_at=0.0, **kw)  # type: ignore[arg-type]


def vmi(phase: Phase = Phase.RUNNING, **kw: object) -> VMI:
    return VMI(name="t", uid="u1", spec=VMSpec(name="t"), created_at=0.0, phase=phase, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("strategy", "instance", "expected"), [
    (RunStrategy.ALWAYS, None, Action.CREATE_VMI),
    (RunStrategy.ALWAYS, vmi(), Action.NOTHING),
    (RunStrategy.ALWAYS, vmi(Phase.FAILED), Action.DELETE_VMI),
    (RunStrategy.ALWAYS, vmi(Phase.SUCCEEDED), Action.DELETE_VMI),
    (RunStrategy.RERUN_ON_FAILURE, None, Action.CREATE_VMI),
    (RunStrategy.RERUN_ON_FAILURE, vmi(Phase.FAILED), Action.DELETE_VMI),
    (RunStrategy.RERUN_ON_FAILURE, vmi(Phase.SUCCEEDED), Action.NOTHING),
    (RunStrategy.ONCE, None, Action.CREATE_VMI),
    (RunStrategy.ONCE, vmi(Phase.RUNNING), Action.NOTHING),
    (RunStrategy.ONCE, vmi(Phase.FAILED), Action.NOTHING),  # not replaced, whatever its end
    (RunStrategy.ONCE, vmi(Phase.SUCCEEDED), Action.NOTHING),
    (RunStrategy.HALTED, None, Action.NOTHING),
    (RunStrategy.HALTED, vmi(), Action.STOP_VMI),
    (RunStrategy.HALTED, vmi(stop_requested=True), Action.NOTHING),
    (RunStrategy.HALTED, vmi(Phase.SUCCEEDED), Action.DELETE_VMI),
    (RunStrategy.MANUAL, None, Action.NOTHING),
    (RunStrategy.MANUAL, vmi(Phase.SUCCEEDED), Action.NOTHING),
])
def test_run_strategies(strategy: RunStrategy, instance: VMI | None, expected: Action) -> None:
    assert plan(vm(strategy), instance) is expected


def test_manual_start_request_creates_then_clears() -> None:
    requested = vm(RunStrategy.MANUAL, start_requested=True)
    assert plan(requested, None) is Action.CREATE_VMI
    assert plan(requested, vmi(Phase.PENDING)) is Action.CLEAR_START_REQUEST


def test_restart_winds_down_that_instance_then_creates() -> None:
    restarting = vm(RunStrategy.ALWAYS, restart_of="u1")
    assert plan(restarting, vmi()) is Action.STOP_VMI
    assert plan(restarting, vmi(stop_requested=True)) is Action.NOTHING
    assert plan(restarting, vmi(Phase.SUCCEEDED)) is Action.DELETE_VMI
    assert plan(restarting, None) is Action.CREATE_VMI


def test_deleted_vm_stops_then_removes_its_instance() -> None:
    assert plan(None, vmi()) is Action.STOP_VMI
    assert plan(None, vmi(Phase.FAILED)) is Action.DELETE_VMI
    assert plan(None, None) is Action.NOTHING


def test_printable_status() -> None:
    assert printable_status(vm(RunStrategy.HALTED), None) == "Stopped"
    assert printable_status(vm(RunStrategy.ALWAYS), None) == "Starting"
    assert printable_status(vm(RunStrategy.ALWAYS), vmi()) == "Running"
    assert printable_status(vm(RunStrategy.HALTED), vmi(stop_requested=True)) == "Stopping"
    assert printable_status(vm(RunStrategy.ALWAYS), vmi(Phase.FAILED)) == "CrashLoopBackOff"


def test_crash_loop_backs_off_exponentially() -> None:
    from scheduler.vmplan import backoff
    assert [backoff(n) for n in range(0, 8)] == [0, 5, 10, 20, 40, 80, 160, 300]
    waiting = vm(RunStrategy.ALWAYS, failures=2, next_start_at=110.0)
    assert plan(waiting, None, now=100.0) is Action.NOTHING
    assert printable_status(waiting, None, now=100.0) == "CrashLoopBackOff"
    assert plan(waiting, None, now=110.0) is Action.CREATE_VMI
    assert plan(waiting, vmi(Phase.RUNNING), now=111.0) is Action.RESET_FAILURES


def test_a_paused_guest_prints_paused_and_stays_running() -> None:
    paused = vmi(conditions=[Condition(type="Paused", status="True", reason="PausedIOError")])
    assert printable_status(vm(RunStrategy.ALWAYS), paused) == "Paused"
    assert plan(vm(RunStrategy.ALWAYS), paused) is Action.NOTHING  # a pause is not an end
    resumed = vmi(conditions=[Condition(type="Paused", status="False", reason="Resumed")])
    assert printable_status(vm(RunStrategy.ALWAYS), resumed) == "Running"


@pytest.mark.parametrize("strategy", list(RunStrategy))
def test_an_unknown_instance_is_neither_deleted_nor_replaced(strategy: RunStrategy) -> None:
    lost = vmi(Phase.UNKNOWN, node_name="node1", phase_before_unknown=Phase.RUNNING)
    action = plan(vm(strategy, failures=1), lost, now=1e9)
    assert action not in (Action.DELETE_VMI, Action.CREATE_VMI, Action.RESET_FAILURES)
    # a stop asked for meanwhile is recorded, for the launcher to carry out when it can
    assert action is (Action.STOP_VMI if strategy is RunStrategy.HALTED else Action.NOTHING)
    assert plan(None, lost) is Action.STOP_VMI
    assert plan(None, vmi(Phase.UNKNOWN, stop_requested=True)) is Action.NOTHING


@pytest.mark.parametrize("strategy", [None, RunStrategy.ALWAYS, RunStrategy.HALTED])
def test_a_finished_instance_waits_for_its_node_to_tear_it_down(strategy: RunStrategy | None) -> None:
    owner = None if strategy is None else vm(strategy)
    ended = vmi(Phase.SUCCEEDED, node_name="node1", stop_requested=True)
    assert plan(owner, ended) is Action.AWAIT_TEARDOWN
    assert plan(owner, vmi(Phase.SUCCEEDED, node_name="node1", torn_down=True)) is Action.DELETE_VMI
    # a node that is not Ready will not tear anything down soon: the record goes without it
    assert plan(owner, ended, node_ready=False) is Action.DELETE_VMI
