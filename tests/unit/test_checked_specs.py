"""A VMI's spec is held to the API's rules once while it stays the same: a bind, a status report or a
node's copy that carries the same spec on, or a change decoded afresh with an equal spec, is not
checked again, while anything new (another spec for the name, a spec with a bad field) is checked in
full, every time it fails."""

from __future__ import annotations

import msgspec
import pytest

import proto.stored
import proto.validation
from proto.errors import ApiError, Code
from proto.spec import VMSpec
from proto.state import VMI, Phase
from proto.stored import check_vmi


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[VMSpec]:
    seen: list[VMSpec] = []
    real = proto.validation.validate_vm

    def counting(spec: VMSpec) -> VMSpec:
        seen.append(spec)
        return real(spec)

    monkeypatch.setattr(proto.stored, "validate_vm", counting)
    monkeypatch.setattr(proto.stored, "_checked_specs", proto.stored._CheckedSpecs(size=2))
    return seen


def vmi(spec: VMSpec) -> VMI:
    return VMI(name=spec.name, uid="u-1", spec=spec, created_at=1.0)


def test_a_spec_carried_on_is_checked_once(checks: list[VMSpec]) -> None:
    first = vmi(VMSpec(name="a"))
    check_vmi("a", first)
    bound = msgspec.structs.replace(first, node_name="node1", phase=Phase.SCHEDULED)
    check_vmi("a", bound)
    check_vmi("a", msgspec.structs.replace(bound, phase=Phase.RUNNING))
    assert len(checks) == 1


def test_an_equal_spec_decoded_afresh_is_not_checked_again(checks: list[VMSpec]) -> None:
    first = vmi(VMSpec(name="a"))
    check_vmi("a", first)
    decoded = msgspec.json.decode(msgspec.json.encode(first), type=VMI)
    assert decoded == first and decoded.spec is not first.spec
    check_vmi("a", decoded)
    assert len(checks) == 1


def test_another_spec_under_the_same_name_is_checked(checks: list[VMSpec]) -> None:
    check_vmi("a", vmi(VMSpec(name="a")))
    changed = vmi(VMSpec(name="a", memory="128Mi"))
    check_vmi("a", changed)
    bad = vmi(VMSpec(name="a", memory="1Ki"))
    with pytest.raises(ApiError):
        check_vmi("a", bad)
    assert checks == [VMSpec(name="a"), changed.spec, bad.spec]
    check_vmi("a", msgspec.json.decode(msgspec.json.encode(changed), type=VMI))  # the last good one is kept
    assert len(checks) == 3


def test_a_bad_spec_is_refused_every_time(checks: list[VMSpec]) -> None:
    bad = vmi(VMSpec(name="a", memory="1Ki"))
    for _ in range(2):
        with pytest.raises(ApiError) as refused:
            check_vmi("a", bad)
        assert refused.value.code is Code.INVALID and refused.value.field == "spec.memory"
    assert len(checks) == 2


def test_the_oldest_are_forgotten_past_the_size(checks: list[VMSpec]) -> None:
    specs = [VMSpec(name=name) for name in ("a", "b", "c")]
    for spec in specs:
        check_vmi(spec.name, vmi(spec))
    check_vmi("c", vmi(specs[2]))  # kept
    check_vmi("a", vmi(specs[0]))  # forgotten (size 2): checked again
    assert len(checks) == 4
