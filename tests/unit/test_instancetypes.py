"""Instancetypes as KubeVirt users write them (proto.instancetypes): the common set sizes a VM, a
user-defined one parses, and what virtbus cannot honour (a size set twice, an unknown
name or field) is refused with its field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from proto import instancetypes
from proto.errors import ApiError, Code
from proto.instancetypes import COMMON, Instancetype
from proto.manifest import parse_manifest_obj
from proto.resources import vm_manifest
from proto.spec import VMSpec
from tests.conftest import REPO

SIZED = yaml.safe_load((REPO / "examples" / "testvm-instancetype.yaml").read_text())
TINY = yaml.safe_load((REPO / "examples" / "instancetype-tiny.yaml").read_text())


def spec_of(doc: object, known: dict[str, Instancetype] = COMMON) -> VMSpec:
    spec = parse_manifest_obj(instancetypes.expand(doc, known.get))
    assert isinstance(spec, VMSpec)
    return spec


def refused(doc: object, known: dict[str, Instancetype] = COMMON) -> ApiError:
    with pytest.raises(ApiError) as err:
        spec_of(doc, known)
    return err.value


def test_a_common_instancetype_sizes_the_vm_and_prints_back_as_the_user_wrote_it() -> None:
    spec = spec_of(SIZED)
    assert (spec.instancetype, spec.memory, spec.cpu.sockets * spec.cpu.cores * spec.cpu.threads) == (
        "u1.nano", "512Mi", 1)
    printed = vm_manifest(spec)
    assert printed["spec"]["instancetype"] == {"name": "u1.nano"}
    assert "cpu" not in printed["spec"]["template"]["spec"]["domain"]  # said once, by the instancetype
    assert spec_of(printed) == spec  # applies again unchanged
    assert {"u1.nano", "u1.small", "u1.large"} <= set(COMMON)


def test_a_user_defined_instancetype() -> None:
    tiny = instancetypes.parse(TINY)
    assert (tiny.name, tiny.cpus, tiny.memory, tiny.common) == ("tiny", 1, "64Mi", False)
    doc = copy.deepcopy(SIZED)
    doc["spec"]["instancetype"] = {"name": "tiny", "kind": "VirtualMachineInstancetype"}
    assert spec_of(doc, {**COMMON, "tiny": tiny}).memory == "64Mi"


def edited(change: dict[str, Any], at: list[str | int]) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(SIZED)
    node: Any = doc
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = change
    return doc


@pytest.mark.parametrize(("doc", "field"), [
    (edited({"cores": 2}, ["spec", "template", "spec", "domain", "cpu"]), "spec.template.spec.domain.cpu"),
    (edited({"requests": {"memory": "1Gi"}}, ["spec", "template", "spec", "domain", "resources"]),
     "spec.template.spec.domain.resources.requests"),
    (edited({"limits": {"memory": "1Gi"}}, ["spec", "template", "spec", "domain", "resources"]),
     "spec.template.spec.domain.resources.limits"),
    # KubeVirt's vm-cirros-clarge.yaml: its memory.guest beside the instancetype, which KubeVirt refuses so
    (edited({"guest": "128Mi"}, ["spec", "template", "spec", "domain", "memory"]),
     "spec.template.spec.domain.memory.guest"),
    (edited({"name": "u9.huge"}, ["spec", "instancetype"]), "spec.instancetype.name"),
    (edited({"name": "u1.nano", "kind": "Flavor"}, ["spec", "instancetype"]), "spec.instancetype.kind"),
    (edited({"name": "u1.nano", "inferFromVolume": "root"}, ["spec", "instancetype"]),
     "spec.instancetype.inferFromVolume"),
    (edited({"name": "fedora", "preferredDiskBus": "sata"}, ["spec", "preference"]),
     "spec.preference.preferredDiskBus"),
])
def test_what_virtbus_cannot_honour_is_refused_with_its_field(doc: dict[str, Any], field: str) -> None:
    err = refused(doc)
    assert err.code in (Code.INVALID, Code.BAD_REQUEST) and err.field == field, (err.field, err.message)


def test_a_memory_that_says_no_size_is_no_conflict() -> None:
    spec = spec_of(edited({}, ["spec", "template", "spec", "domain", "memory"]), COMMON)
    assert spec.instancetype == SIZED["spec"]["instancetype"]["name"]


@pytest.mark.parametrize(("change", "field"), [
    ({"spec": {"cpu": {"guest": 0}, "memory": {"guest": "1Gi"}}}, "spec.cpu.guest"),
    ({"spec": {"cpu": {"guest": 1}, "memory": {"guest": "lots"}}}, "spec.memory.guest"),
    ({"spec": {"cpu": {"guest": 1, "dedicatedCPUPlacement": True}, "memory": {"guest": "1Gi"}}},
     "spec.cpu.dedicatedCPUPlacement"),
    ({"spec": {"cpu": {"guest": 1}, "memory": {"guest": "1Gi"}, "gpus": []}}, "spec.gpus"),
    ({"metadata": {"name": "u1.small"}}, "metadata.name"),  # the common ones are not replaced
    ({"metadata": {"name": "../x"}}, "metadata.name"),
])
def test_a_bad_instancetype_is_refused_with_its_field(change: dict[str, Any], field: str) -> None:
    doc = {**copy.deepcopy(TINY), **change}
    with pytest.raises(ApiError) as err:
        instancetypes.parse(doc)
    assert err.value.field == field, (err.value.field, err.value.message)
