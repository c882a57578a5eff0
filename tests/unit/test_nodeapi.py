"""The rules the control plane applies to what a node reports (proto.nodeapi): NodeRestriction."""

from __future__ import annotations

import pytest

from proto.errors import ApiError, Code
from proto.nodeapi import StatusReport, apply_report
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
