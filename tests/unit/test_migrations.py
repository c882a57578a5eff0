"""Live migration's rules (proto.migrations): what may move, who may say which step, what a step
changes, and KubeVirt's manifest."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import yaml

from proto import migrations
from proto.api import decode_request
from proto.errors import ApiError, Code
from proto.manifest import parse_manifest_obj
from proto.migrations import Migration, MigrationReport, apply_report, check_target, not_migratable
from proto.spec import VMSpec
from proto.state import VMI, MigrationPhase, MigrationState, Phase, VMIInterface
from tests.conftest import REPO


def vm_manifest(**template: Any) -> dict[str, Any]:
    spec = {"domain": {"resources": {"requests": {"memory": "64M"}},
                       "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                   "interfaces": [{"name": "default", "masquerade": {}}]}},
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "root", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}
    spec.update(template)
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
            "spec": {"template": {"spec": spec}}}


def running(spec: VMSpec | None = None, **kw: Any) -> VMI:
    spec = spec or _spec(vm_manifest())
    return VMI(name="vm1", uid="u1", spec=spec, created_at=1.0, phase=Phase.RUNNING, node_name="node1", **kw)


def _spec(manifest: dict[str, Any]) -> VMSpec:
    parsed = parse_manifest_obj(manifest)
    assert isinstance(parsed, VMSpec)
    return parsed


def at(phase: MigrationPhase, **kw: Any) -> VMI:
    state = MigrationState(migration_uid="m1", migration_name="mig", source_node="node1", phase=phase,
                           start_timestamp=10.0, target_node="node2", **kw)
    return running(migration_state=state)


def report(phase: MigrationPhase, **kw: Any) -> MigrationReport:
    return MigrationReport(vmi="vm1", uid="u1", migration_uid="m1", phase=phase, **kw)


READY = {"port": 40000, "node_dir": "/var/lib/virtbus/nodes/node2",
         "interfaces": [VMIInterface(name="default", ip_address="10.244.1.7", ip_addresses=["10.244.1.7"])]}


def test_a_masqueraded_guest_on_ephemeral_disks_may_move() -> None:
    assert not_migratable(running()) is None
    with_empty = vm_manifest()
    with_empty["spec"]["template"]["spec"]["volumes"].append({"name": "scratch", "emptyDisk": {"capacity": "1Gi"}})
    with_empty["spec"]["template"]["spec"]["domain"]["devices"]["disks"].append(
        {"name": "scratch", "disk": {"bus": "virtio"}})
    assert not_migratable(running(_spec(with_empty))) is None


@pytest.mark.parametrize(("template", "why"), [
    ({"domain": {"resources": {"requests": {"memory": "64M"}}, "devices": {
        "disks": [{"name": "root", "disk": {"bus": "virtio"}}], "interfaces": [{"name": "default", "bridge": {}}]}}},
     "cannot migrate VMI which does not use masquerade or a migratable plugin to connect to the pod network"),
    ({"volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "data"}}]},
     "cannot migrate VMI: PVC data is not shared, live migration requires that all PVCs must be shared (using "
     "ReadWriteMany access mode)"),
    ({"volumes": [{"name": "root", "hostDisk": {"path": "/srv/d.img", "type": "Disk"}}]},
     "cannot migrate VMI with non-shared HostDisk"),
])
def test_what_cannot_move_is_said_in_kubevirts_words(template: dict[str, Any], why: str) -> None:
    assert not_migratable(running(_spec(vm_manifest(**template)))) == why


def test_an_instance_that_does_not_run_or_already_moves_is_refused() -> None:
    assert not_migratable(msgspec.structs.replace(running(), phase=Phase.SUCCEEDED)) == \
        "Cannot migrate VMI in finalized state."
    assert "not running (phase Scheduled)" in str(not_migratable(msgspec.structs.replace(running(),
                                                                                         phase=Phase.SCHEDULED)))
    assert str(not_migratable(at(MigrationPhase.SCHEDULED))).startswith("in-flight migration detected")
    assert not_migratable(at(MigrationPhase.FAILED)) is None  # the last one failed: it may try again
    ha = running(msgspec.structs.replace(_spec(vm_manifest()), high_availability=True))
    assert "highly available" in str(not_migratable(ha))


def test_only_the_target_says_it_is_ready_and_the_source_is_told_where() -> None:
    moved = apply_report(at(MigrationPhase.SCHEDULED), report(MigrationPhase.TARGET_READY, **READY), "node2",
                         "10.99.0.12", 20.0)
    assert moved is not None and moved.migration_state is not None
    target = moved.migration_state.target
    assert moved.migration_state.phase is MigrationPhase.TARGET_READY
    assert target is not None and (target.address, target.port) == ("10.99.0.12", 40000)
    assert b"token" not in msgspec.json.encode(moved)  # every viewer reads the record (proto.migrationtoken)
    with pytest.raises(ApiError) as refused:  # an older launcher's token is refused, not kept
        decode_request(b'{"vmi": "vm1", "uid": "u1", "migrationUid": "m1", "phase": "TargetReady", "port": 1, '
                       b'"token": "0123456789abcdef0123456789abcdef"}', MigrationReport)
    assert refused.value.code is Code.BAD_REQUEST
    for node in ("node1", "node3"):
        with pytest.raises(ApiError) as refused:
            apply_report(at(MigrationPhase.SCHEDULED), report(MigrationPhase.TARGET_READY, **READY), node, "x", 20.0)
        assert refused.value.code is Code.FORBIDDEN


@pytest.mark.parametrize(("field", "value"), [
    ("port", 0), ("port", 70000),
    ("node_dir", "relative/dir"), ("node_dir", "/var/lib/'/><evil"), ("node_dir", "/var/../etc"),
    ("interfaces", [VMIInterface(name="eth9", ip_address="10.244.1.7")]),
    ("interfaces", [VMIInterface(name="default", ip_address="not an address")]),
])
def test_a_ready_target_saying_anything_unsafe_is_refused_and_changes_nothing(field: str, value: object) -> None:
    with pytest.raises(ApiError) as refused:
        apply_report(at(MigrationPhase.SCHEDULED), report(MigrationPhase.TARGET_READY, **{**READY, field: value}),
                     "node2", "10.99.0.12", 20.0)
    assert refused.value.code is Code.INVALID


def test_the_source_moves_the_guest_and_the_instance_is_bound_to_the_target_with_its_new_address() -> None:
    ready = apply_report(at(MigrationPhase.SCHEDULED), report(MigrationPhase.TARGET_READY, **READY), "node2",
                         "10.99.0.12", 20.0)
    assert ready is not None
    with pytest.raises(ApiError) as early:  # not before the source has begun to move it
        apply_report(ready, report(MigrationPhase.SUCCEEDED), "node2", None, 21.0)
    assert early.value.code is Code.INVALID  # never lands: not a race to try again
    with pytest.raises(ApiError) as skipped:  # nor the source skip a step
        apply_report(ready, report(MigrationPhase.SUCCEEDED), "node1", None, 21.0)
    assert skipped.value.code is Code.INVALID
    moving = apply_report(ready, report(MigrationPhase.RUNNING), "node1", None, 21.0)
    assert moving is not None
    assert apply_report(moving, report(MigrationPhase.RUNNING), "node1", None, 21.5) is None  # said again
    done = apply_report(moving, report(MigrationPhase.SUCCEEDED), "node1", None, 22.0)
    assert done is not None and done.migration_state is not None
    assert (done.node_name, done.interfaces[0].ip_address) == ("node2", "10.244.1.7")
    assert done.migration_state.phase is MigrationPhase.SUCCEEDED and done.migration_state.end_timestamp == 22.0
    assert done.migration_state.target is None  # its token is not kept
    # the target may say it first, as the guest resumes there: the same outcome
    by_target = apply_report(moving, report(MigrationPhase.SUCCEEDED), "node2", None, 22.0)
    assert by_target == done
    # over: a late word from either side changes nothing (the source is node2 now: node1 is neither)
    assert apply_report(done, report(MigrationPhase.FAILED, reason="late"), "node2", None, 23.0) is None
    assert apply_report(done, report(MigrationPhase.SUCCEEDED), "node2", None, 23.0) is None


def test_either_side_fails_it_and_the_guest_stays_where_it_runs() -> None:
    for node in ("node1", "node2"):
        failed = apply_report(at(MigrationPhase.RUNNING), report(MigrationPhase.FAILED, reason="EOF"), node, None, 5.0)
        assert failed is not None and failed.migration_state is not None
        assert (failed.node_name, failed.migration_state.phase, failed.migration_state.reason) == (
            "node1", MigrationPhase.FAILED, "EOF")
    with pytest.raises(ApiError) as other:
        apply_report(at(MigrationPhase.RUNNING), msgspec.structs.replace(report(MigrationPhase.FAILED),
                                                                         migration_uid="m2"), "node1", None, 5.0)
    assert other.value.code is Code.NOT_FOUND  # another migration's word: never retried (it never lands)


def test_kubevirts_migration_manifest_is_read_as_it_is() -> None:
    example = yaml.safe_load((REPO / "examples" / "migration-job.yaml").read_text())
    assert migrations.parse(example) == ("migration-job", "testvm", {})
    item = Migration(name="migration-job", uid="u", vmi_name="testvm", created_at=1.0,
                     phase=MigrationPhase.SUCCEEDED, source_node="node1", target_node="node2")
    written = migrations.manifest(item)
    assert migrations.parse(written)[:2] == ("migration-job", "testvm")
    assert written["status"]["migrationState"] == {"sourceNode": "node1", "targetNode": "node2", "completed": True}


@pytest.mark.parametrize(("change", "field"), [
    ({"metadata": {"name": "Bad_Name"}}, "metadata.name"),
    ({"spec": {"vmiName": "a/b"}}, "spec.vmiName"),
    ({"spec": {"vmiName": "vm1", "extra": 1}}, "spec.extra"),
    ({"spec": {}}, "spec.vmiName"),
])
def test_a_bad_migration_manifest_is_refused_by_path(change: dict[str, Any], field: str) -> None:
    obj = {"apiVersion": "kubevirt.io/v1", "kind": migrations.KIND, "metadata": {"name": "m"},
           "spec": {"vmiName": "vm1"}, **change}
    with pytest.raises(ApiError) as refused:
        migrations.parse(obj)
    assert refused.value.field == field


def test_a_target_is_a_port_and_a_plain_absolute_directory() -> None:
    check_target(1, "/var/lib/virtbus/nodes/node-1_a.b")
    for port, where in ((0, "/x"), (1, "/x y"), (1, "//x"), (1, "/x/../etc")):
        with pytest.raises(ApiError):
            check_target(port, where)



def test_the_apis_refusal_is_kubevirts_admission_with_its_condition_reason() -> None:
    bridged = running(_spec(vm_manifest(domain={"resources": {"requests": {"memory": "64M"}}, "devices": {
        "disks": [{"name": "root", "disk": {"bus": "virtio"}}], "interfaces": [{"name": "default", "bridge": {}}]}})))
    refused = migrations.refusal(bridged)
    assert refused is not None and (refused.code, refused.field) == (Code.INVALID, "spec.vmiName")
    assert refused.message.startswith("Cannot migrate VMI, Reason: InterfaceNotLiveMigratable, Message: cannot "
                                      "migrate VMI which does not use masquerade")
    moving = migrations.refusal(at(MigrationPhase.RUNNING))
    assert moving is not None and moving.code is Code.CONFLICT
    assert migrations.refusal(running()) is None
