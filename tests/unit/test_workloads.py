"""The workload kinds' manifests (proto.workloads, proto.selector) and planners (scheduler.workloadplan):
each shape KubeVirt users write parses, what virtbus cannot honour is refused with its path, and the
planners keep the count as KubeVirt's controllers do."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from proto import selector, workloads
from proto.errors import ApiError, Code
from proto.manifest import parse_manifest_obj
from proto.spec import EmptyDisk, PersistentVolumeClaim, RunStrategy, VMSpec
from proto.state import VMI, Phase
from proto.stored import validator
from scheduler.workloadplan import plan_pool, plan_replicas
from tests.conftest import REPO

RS = yaml.safe_load((REPO / "examples" / "testvmirs.yaml").read_text())
POOL = yaml.safe_load((REPO / "examples" / "testvmpool.yaml").read_text())


def edited(doc: dict[str, Any], path: list[str | int], value: object) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(doc)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def pool_of(doc: object) -> workloads.Pool:
    name, replicas, chosen, vm = workloads.pool_vm_manifest(doc)
    try:
        spec = parse_manifest_obj(vm)
    except ApiError as err:
        raise ApiError(err.code, err.message, workloads.pool_field(err.field)) from None
    assert isinstance(spec, VMSpec)
    return workloads.Pool(name=name, replicas=replicas, selector=chosen, template=workloads.pool_template(name, spec))


# --- replica sets -------------------------------------------------------------------------------------
def test_a_replica_set_as_kubevirt_writes_it() -> None:
    rs = workloads.parse_replicaset(RS)
    assert (rs.name, rs.replicas, rs.selector.match_labels) == ("testreplicaset", 2, {"myvmi": "myvmi"})
    assert rs.template.run_strategy is RunStrategy.ONCE and rs.template.labels == {"myvmi": "myvmi"}
    assert rs.template.memory == "64M"
    validator(workloads.ReplicaSet)(rs.name, rs)  # what the API stores, a reader takes


def test_match_expressions_select() -> None:
    doc = edited(RS, ["spec", "selector"], {"matchExpressions": [
        {"key": "myvmi", "operator": "In", "values": ["myvmi", "other"]},
        {"key": "tier", "operator": "DoesNotExist"}]})
    rs = workloads.parse_replicaset(doc)
    assert rs.selector.matches({"myvmi": "myvmi"}) and not rs.selector.matches({"myvmi": "myvmi", "tier": "x"})
    assert workloads.parse_replicaset(edited(RS, ["spec", "replicas"], 0)).replicas == 0


@pytest.mark.parametrize(("path", "value", "field"), [
    (["spec", "selector", "matchLabels"], {"myvmi": "other"}, "spec.template.metadata.labels"),
    (["spec", "selector"], {}, "spec.selector"),
    (["spec", "selector", "matchExpressions"], [{"key": "a", "operator": "Gt", "values": ["1"]}],
     "spec.selector.matchExpressions[0].operator"),
    (["spec", "selector", "matchExpressions"], [{"key": "a", "operator": "In"}],
     "spec.selector.matchExpressions[0].values"),
    (["spec", "paused"], True, "spec.paused"),
    (["spec", "replicas"], 101, "spec.replicas"),
    (["spec", "replicas"], "2", "spec.replicas"),
    (["spec", "template", "spec", "domain", "devices", "disks", 0, "cdrom"], {},
     "spec.template.spec.domain.devices.disks[0].cdrom"),
    (["spec", "template", "spec", "domain", "firmware"], {"bootloader": {"efi": {}}},
     "spec.template.spec.domain.firmware.bootloader.efi"),
    (["spec", "template", "spec", "volumes", 0], {"name": "containerdisk", "persistentVolumeClaim": {"claimName": "x"}},
     "spec.template.spec.volumes[0]"),
    (["spec", "template", "spec", "domain", "resources", "requests", "memory"], "lots",
     "spec.template.spec.domain.resources.requests.memory"),
    (["metadata", "name"], "a" * 58, "metadata.name"),  # no room for -xxxxx
    (["metadata", "name"], "Bad_Name", "metadata.name"),
    (["kind"], "VirtualMachineInstanceReplicaSets", "kind"),
])
def test_a_replica_set_virtbus_cannot_honour_is_refused_by_path(path: list[str | int], value: object,
                                                                field: str) -> None:
    with pytest.raises(ApiError) as err:
        workloads.parse_replicaset(edited(RS, path, value))
    assert err.value.field == field, (err.value.field, err.value.message)
    assert err.value.code in (Code.INVALID, Code.BAD_REQUEST)


# --- pools ----------------------------------------------------------------------------------------------
def test_a_pool_as_kubevirt_writes_it() -> None:
    pool = pool_of(POOL)
    assert (pool.name, pool.replicas) == ("vm-pool-cirros", 2)
    validator(workloads.Pool)(pool.name, pool)
    vm = workloads.pool_vm_spec(pool, 3)
    assert vm.name == "vm-pool-cirros-3" and vm.run_strategy is RunStrategy.ALWAYS
    assert [t.name for t in vm.data_volume_templates] == ["rootdisk-vm-pool-cirros-3"]
    assert vm.volumes[0].source == PersistentVolumeClaim(claim_name="rootdisk-vm-pool-cirros-3")
    assert workloads.pool_index("vm-pool-cirros", vm.name) == 3
    assert workloads.pool_index("vm-pool", vm.name) is None


def test_a_pool_template_of_containerdisks_needs_no_volumes() -> None:
    doc = edited(POOL, ["spec", "virtualMachineTemplate", "spec", "template", "spec", "volumes"],
                 [{"name": "rootdisk", "emptyDisk": {"capacity": "1Gi"}}])
    doc["spec"]["virtualMachineTemplate"]["spec"].pop("dataVolumeTemplates")
    vm = workloads.pool_vm_spec(pool_of(doc), 0)
    assert isinstance(vm.volumes[0].source, EmptyDisk) and not vm.data_volume_templates


TEMPLATE = ["spec", "virtualMachineTemplate", "spec"]


@pytest.mark.parametrize(("path", "value", "field"), [
    (["spec", "selector", "matchLabels"], {"kubevirt.io/vmpool": "x"}, "spec.virtualMachineTemplate.metadata.labels"),
    (["apiVersion"], "kubevirt.io/v1", "apiVersion"),
    (["spec", "paused"], True, "spec.paused"),
    (["spec", "nameGeneration"], {}, "spec.nameGeneration"),
    ([*TEMPLATE, "template", "spec", "volumes", 0], {"name": "rootdisk", "dataVolume": {"name": "shared"}},
     "spec.virtualMachineTemplate.spec.template.spec.volumes[0]"),
    ([*TEMPLATE, "runStrategy"], "Sometimes", "spec.virtualMachineTemplate.spec.runStrategy"),
    ([*TEMPLATE, "template", "spec", "domain", "devices", "gpus"], [],
     "spec.virtualMachineTemplate.spec.template.spec.domain.devices.gpus"),
    (["metadata", "name"], "p" * 55,  # rootdisk-ppp...-99 would pass 63 characters
     "spec.virtualMachineTemplate.spec.dataVolumeTemplates[0].metadata.name"),
    (["metadata", "name"], "p" * 61, "metadata.name"),
])
def test_a_pool_virtbus_cannot_honour_is_refused_by_path(path: list[str | int], value: object, field: str) -> None:
    with pytest.raises(ApiError) as err:
        pool_of(edited(POOL, path, value))
    assert err.value.field == field, (err.value.field, err.value.message)


def test_a_stored_selector_is_held_to_the_rules() -> None:
    with pytest.raises(ApiError):
        selector.check(selector.LabelSelector(), "selector")
    with pytest.raises(ApiError):
        selector.check(selector.LabelSelector(match_labels={"bad key!": "x"}), "selector")


# --- planners -------------------------------------------------------------------------------------------
def vmi(name: str, phase: Phase, created: float, **extra: Any) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name), created_at=created, phase=phase, owner="rs", **extra)


def test_a_replica_set_makes_what_is_missing() -> None:
    plan = plan_replicas(3, [vmi("a", Phase.RUNNING, 1)])
    assert (plan.create, plan.let_go, plan.status.replicas, plan.status.ready_replicas) == (2, [], 1, 1)


@pytest.mark.parametrize("dead", [
    vmi("b", Phase.FAILED, 2), vmi("b", Phase.SUCCEEDED, 2), vmi("b", Phase.UNKNOWN, 2),
    vmi("b", Phase.FAILED, 2, fenced=True),
])
def test_an_ended_or_lost_instance_is_let_go_and_replaced(dead: VMI) -> None:
    plan = plan_replicas(2, [vmi("a", Phase.RUNNING, 1), dead])
    assert (plan.create, plan.let_go, plan.status.replicas) == (1, ["b"], 1)


def test_one_being_deleted_is_not_counted_nor_let_go_again() -> None:
    plan = plan_replicas(2, [vmi("a", Phase.RUNNING, 1), vmi("b", Phase.RUNNING, 2, deleting=True)])
    assert (plan.create, plan.let_go) == (1, [])


def test_scale_down_lets_go_of_not_running_then_newest() -> None:
    members = [vmi("old", Phase.RUNNING, 1), vmi("new", Phase.RUNNING, 5), vmi("mid", Phase.RUNNING, 3),
               vmi("pending", Phase.SCHEDULING, 0)]
    assert plan_replicas(2, members).let_go == ["pending", "new"]
    assert plan_replicas(0, members).let_go == ["pending", "new", "mid", "old"]
    assert plan_replicas(4, members).let_go == []


def test_a_pool_fills_the_lowest_free_index_and_removes_the_highest() -> None:
    assert plan_pool(3, {}).create == [0, 1, 2]
    assert plan_pool(3, {"p-0": 0, "p-2": 2}).create == [1]
    assert plan_pool(1, {"p-0": 0, "p-1": 1, "p-10": 10}).delete == ["p-10", "p-1"]
    assert plan_pool(2, {"p-0": 0, "p-1": 1}) == plan_pool(2, {"p-1": 1, "p-0": 0})
    assert plan_pool(2, {"p-0": 0, "p-1": 1}).create == [] and plan_pool(2, {"p-0": 0, "p-1": 1}).delete == []
    assert plan_pool(2, {"stray": None, "p-0": 0}).delete == ["stray"]


def test_template_annotations_reach_the_members() -> None:
    ha = {"virtbus.io/high-availability": "true"}
    pool = pool_of(edited(POOL, ["spec", "virtualMachineTemplate", "metadata", "annotations"], ha))
    assert workloads.pool_vm_spec(pool, 0).high_availability  # each VM of the pool runs again elsewhere
    with pytest.raises(ApiError) as err:  # an instance runs once: refused as a VMI's is, where it is written
        workloads.parse_replicaset(edited(RS, ["spec", "template", "metadata", "annotations"], ha))
    assert err.value.field == "spec.template.metadata.annotations.virtbus.io/high-availability"
