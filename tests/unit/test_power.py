"""The api's rules for pause, unpause and soft-reboot (scheduler.power): what each request does to a
VMI, and what it refuses with which code."""

from __future__ import annotations

import msgspec
import pytest

from proto.errors import ApiError, Code
from proto.spec import VMSpec
from proto.state import VMI, Condition, Phase
from scheduler import power
from scheduler.vmplan import printable_status

RUNNING = VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=1.0, phase=Phase.RUNNING, node_name="node1")


def r(vmi: VMI, **change: object) -> VMI:
    return msgspec.structs.replace(vmi, **change)


def paused_by(reason: str) -> Condition:
    return Condition(type="Paused", status="True", reason=reason)


def test_a_pause_is_recorded_once() -> None:
    paused = power.pause(RUNNING)
    assert paused is not None and paused.pause_requested and paused.pause_generation == 1
    assert power.pause(paused) is None  # already asked: nothing to write


def test_an_unpause_clears_the_request_and_moves_the_generation() -> None:
    paused = power.pause(RUNNING)
    assert paused is not None
    resumed = power.unpause(paused)
    assert resumed is not None and not resumed.pause_requested and resumed.pause_generation == 2
    assert power.unpause(RUNNING) is None  # neither paused nor asked to be


def test_an_unpause_also_resumes_a_guest_the_hypervisor_paused() -> None:
    io = r(RUNNING, conditions=[paused_by("PausedIOError")])
    resumed = power.unpause(io)
    assert resumed is not None and resumed.pause_generation == 1 and not resumed.pause_requested


def test_soft_reboots_are_counted() -> None:
    once = power.soft_reboot(RUNNING)
    assert power.soft_reboot(once).reboot_requests == 2


@pytest.mark.parametrize("vmi", [r(RUNNING, pause_requested=True), r(RUNNING, conditions=[paused_by("PausedByUser")])])
def test_a_paused_guest_is_not_soft_rebooted(vmi: VMI) -> None:
    with pytest.raises(ApiError) as info:
        power.soft_reboot(vmi)
    assert info.value.code is Code.INVALID and "unpause" in info.value.message


@pytest.mark.parametrize(("vmi", "code"), [
    (r(RUNNING, phase=Phase.SUCCEEDED), Code.INVALID),
    (r(RUNNING, phase=Phase.FAILED), Code.INVALID),
    (r(RUNNING, stop_requested=True), Code.INVALID),
    (r(RUNNING, phase=Phase.SCHEDULED), Code.CONFLICT),  # on its way: retryable
    (r(RUNNING, phase=Phase.PENDING, node_name=None), Code.CONFLICT),
    (r(RUNNING, phase=Phase.UNKNOWN), Code.UNAVAILABLE),
], ids=["succeeded", "failed", "stopping", "scheduled", "pending", "unknown"])
def test_only_a_running_instance_takes_them(vmi: VMI, code: Code) -> None:
    for rule in (power.pause, power.unpause, power.soft_reboot):
        with pytest.raises(ApiError) as info:
            rule(vmi)
        assert info.value.code is code, rule


def test_a_vm_prints_paused_by_its_condition_not_by_the_request() -> None:
    """As KubeVirt's: Paused once the guest is, whatever asked; the instance's phase stays Running."""
    from proto.state import VM

    vm = VM(spec=VMSpec(name="vm1"), created_at=1.0)
    asked = power.pause(RUNNING)
    assert asked is not None and printable_status(vm, asked) == "Running"
    assert printable_status(vm, r(asked, conditions=[paused_by("PausedByUser")])) == "Paused"
