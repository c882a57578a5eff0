"""The rules the control plane applies to what a node reports (proto.nodeapi): NodeRestriction."""

from __future__ import annotations

import pytest

from proto.errors import ApiError, Code
from proto.nodeapi import NodeCondition, StatusReport, apply_report
from proto.spec import Interface, Network, VMSpec
from proto.state import VMI, Phase, VMIInterface

T0 = 1000.0


def bound(phase: Phase = Phase.SCHEDULED, node: str | None = "node1") -> VMI:
    spec = VMSpec(name="testvm", interfaces=[Interface(name="default", binding="masquerade")],
                  networks=[Network(name="default")])
    return VMI(name="testvm", uid="u1", spec=spec, created_at=T0, phase=phase, node_name=node)


def test_running_sets_started_and_ready() -> None:
    new = apply_report(bound(), StatusReport(vmi="testvm", uid="u1", phase=Phase.RUNNING), "node1", T0 + 1)
    assert new is not None and new.phase is Phase.RUNNING and new.started_at == T0 + 1
    assert [(c.type, c.status) for c in new.conditions] == [("Ready", "True")]


def test_running_keeps_the_launch_stages_the_launcher_said() -> None:
    report = StatusReport(vmi="testvm", uid="u1", phase=Phase.RUNNING, launcher_started_at=T0 + 0.2,
                          launcher_ready_at=T0 + 0.5)
    new = apply_report(bound(), report, "node1", T0 + 1)
    assert new is not None and (new.launcher_started_at, new.launcher_ready_at) == (T0 + 0.2, T0 + 0.5)


def test_an_end_keeps_its_reason_and_ready_false() -> None:
    new = apply_report(bound(Phase.RUNNING), StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED,
                                                          reason="domain stopped: CRASHED"), "node1", T0 + 5)
    assert new is not None and new.phase is Phase.FAILED and new.reason == "domain stopped: CRASHED"
    assert new.finished_at == T0 + 5 and new.conditions[-1].status == "False"


def test_a_finished_instance_keeps_its_end() -> None:
    done = bound(Phase.SUCCEEDED)
    assert apply_report(done, StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED), "node1", T0) is None


def test_interfaces_alone() -> None:
    nic = VMIInterface(name="default", ip_address="10.244.0.2", mac="02:00:00:00:00:01")
    new = apply_report(bound(), StatusReport(vmi="testvm", uid="u1", interfaces=[nic]), "node1", T0)
    assert new is not None and new.interfaces == [nic] and new.phase is Phase.SCHEDULED


@pytest.mark.parametrize(("report", "field"), [
    (StatusReport(vmi="testvm", uid="u1", reason="\x1b[2Jgone"), "reason"),  # a terminal escape
    (StatusReport(vmi="testvm", uid="u1", reason="x" * 5000), "reason"),
    (StatusReport(vmi="testvm", uid="u1",
                  interfaces=[VMIInterface(name="default", ip_address="1.2.3.4; flush ruleset")]),
     "interfaces[0].ipAddress"),
    (StatusReport(vmi="testvm", uid="u1", interfaces=[VMIInterface(name="default", mac="zz")]), "interfaces[0].mac"),
    (StatusReport(vmi="testvm", uid="u1", interfaces=[VMIInterface(name="eth9")]), "interfaces[0].name"),
    # conditions: only those a node alone sees (not Ready, which follows the phase unless the VMI has a
    # readinessProbe, nor PodScheduled)
    (StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="Ready", status="True")]),
     "conditions[0].type"),
    (StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="PodScheduled", status="True")]),
     "conditions[0].type"),
    (StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="Paused", status="yes")]),
     "conditions[0].status"),
    (StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="Paused", status="True", reason="a\nb")]),
     "conditions[0].reason"),
    (StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="Paused", status="True"),
                                                      NodeCondition(type="Paused", status="False")]),
     "conditions[0].type"),
    # a launch time is a clock reading, not what a msgspec float can also be
    (StatusReport(vmi="testvm", uid="u1", launcher_started_at=float("nan")), "launcher_started_at"),
    (StatusReport(vmi="testvm", uid="u1", launcher_ready_at=float("inf")), "launcher_ready_at"),
    (StatusReport(vmi="testvm", uid="u1", launcher_ready_at=-1.0), "launcher_ready_at"),
])
def test_what_a_node_says_is_checked(report: StatusReport, field: str) -> None:
    with pytest.raises(ApiError) as exc:
        apply_report(bound(), report, "node1", T0)
    assert exc.value.code is Code.INVALID and exc.value.field == field


@pytest.mark.parametrize(("node", "uid", "phase", "code"), [
    ("node2", "u1", Phase.RUNNING, Code.FORBIDDEN),  # another node's VMI
    ("node1", "u0", Phase.RUNNING, Code.CONFLICT),  # an earlier run of it
    ("node1", "u1", Phase.SCHEDULED, Code.INVALID),  # a node does not schedule
    ("node1", "u1", Phase.PENDING, Code.INVALID),
    ("node1", "u1", Phase.UNKNOWN, Code.INVALID),
])
def test_what_a_node_may_not_say(node: str, uid: str, phase: Phase, code: Code) -> None:
    with pytest.raises(ApiError) as exc:
        apply_report(bound(), StatusReport(vmi="testvm", uid=uid, phase=phase), node, T0)
    assert exc.value.code is code


def test_an_unbound_vmi_is_nobodys() -> None:
    with pytest.raises(ApiError) as exc:
        apply_report(bound(node=None), StatusReport(vmi="testvm", uid="u1", phase=Phase.RUNNING), "node1", T0)
    assert exc.value.code is Code.FORBIDDEN


def paused(status: str, reason: str) -> StatusReport:
    return StatusReport(vmi="testvm", uid="u1", conditions=[NodeCondition(type="Paused", status=status, reason=reason,
                                                                          message="why")])


def test_a_pause_is_a_condition_and_the_phase_stays_running() -> None:
    running = apply_report(bound(), StatusReport(vmi="testvm", uid="u1", phase=Phase.RUNNING), "node1", T0)
    assert running is not None
    new = apply_report(running, paused("True", "PausedIOError"), "node1", T0 + 3)
    assert new is not None and new.phase is Phase.RUNNING and new.reason == ""
    cond = next(c for c in new.conditions if c.type == "Paused")
    assert (cond.status, cond.reason, cond.message) == ("True", "PausedIOError", "why")
    assert cond.last_transition_time == T0 + 3
    assert [c.type for c in new.conditions] == ["Ready", "Paused"]
    # said again: nothing changes, not even the transition time
    assert apply_report(new, paused("True", "PausedIOError"), "node1", T0 + 9) is None
    resumed = apply_report(new, paused("False", "Resumed"), "node1", T0 + 10)
    assert resumed is not None
    pause = [(c.status, c.last_transition_time) for c in resumed.conditions if c.type == "Paused"]
    assert pause == [("False", T0 + 10)]


def test_an_end_drops_the_pause() -> None:
    running = bound(Phase.RUNNING)
    was_paused = apply_report(running, paused("True", "PausedByUser"), "node1", T0)
    assert was_paused is not None
    ended = apply_report(was_paused, StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED, reason="x"), "node1", T0)
    assert ended is not None and [c.type for c in ended.conditions] == ["Ready"]


def test_another_node_may_not_pause_it() -> None:
    with pytest.raises(ApiError) as exc:
        apply_report(bound(Phase.RUNNING), paused("True", "PausedByUser"), "node2", T0)
    assert exc.value.code is Code.FORBIDDEN


def unknown(before: Phase = Phase.RUNNING) -> VMI:
    import msgspec
    return msgspec.structs.replace(bound(Phase.UNKNOWN), phase_before_unknown=before, started_at=T0 + 2)


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.FAILED, Phase.SUCCEEDED])
def test_a_node_heard_again_sets_an_unknown_instance(phase: Phase) -> None:
    new = apply_report(unknown(), StatusReport(vmi="testvm", uid="u1", phase=phase), "node1", T0 + 60)
    assert new is not None and new.phase is phase and new.phase_before_unknown is None
    # running all along: the guest keeps the time it started
    assert new.started_at == T0 + 2
    assert new.conditions[-1].status == ("True" if phase is Phase.RUNNING else "False")


def test_interfaces_alone_leave_unknown_as_it_is() -> None:
    nic = VMIInterface(name="default", ip_address="10.244.0.2")
    new = apply_report(unknown(), StatusReport(vmi="testvm", uid="u1", interfaces=[nic]), "node1", T0)
    assert new is not None and new.phase is Phase.UNKNOWN and new.phase_before_unknown is Phase.RUNNING


def test_torn_down_only_after_the_end_and_the_end_is_kept() -> None:
    running = bound(Phase.RUNNING)
    with pytest.raises(ApiError) as err:
        apply_report(running, StatusReport(vmi="testvm", uid="u1", torn_down=True), "node1", T0)
    assert err.value.code is Code.INVALID and err.value.field == "torn_down"
    ended = apply_report(running, StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED, torn_down=True),
                         "node1", T0)
    assert ended is not None and ended.phase is Phase.FAILED and ended.torn_down
    done = bound(Phase.SUCCEEDED)
    late = apply_report(done, StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED, reason="x", torn_down=True),
                        "node1", T0)
    assert late is not None and late.torn_down and late.phase is Phase.SUCCEEDED and late.reason == ""
    assert apply_report(late, StatusReport(vmi="testvm", uid="u1", torn_down=True), "node1", T0) is None
    with pytest.raises(ApiError) as other:  # another node cannot let it go
        apply_report(done, StatusReport(vmi="testvm", uid="u1", torn_down=True), "node2", T0)
    assert other.value.code is Code.FORBIDDEN
