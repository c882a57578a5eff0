"""The pure parts of snapshots and restores: what a node may report, who takes a snapshot, the
progress shown, what a restore makes, the handler's plan and the launcher's backup job."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from msgspec.structs import replace

from handler.volumework import Work, plan
from launcher.backup import SnapshotTaker, compose_backup_xml, whole_groups
from proto import snapshotmanifest
from proto.errors import ApiError, Code
from proto.snapshotapi import VMRestore, VMSnapshotCreate
from proto.snapshots import (
    DEADLINE_EXCEEDED,
    SnapshotPhase,
    SnapshotProgress,
    VMSnapshot,
    VolumeProgress,
    VolumeSnapshot,
    apply_snapshot_progress,
    apply_volume_progress,
    discarded,
    failed_at_deadline,
    failed_by_deadline,
    is_discarded,
    orphaned,
    past_deadline,
    percent,
    snapshot_name_for,
    snapshot_taker,
    to_discard,
    vm_snapshot_phase,
    written_volumes,
)
from proto.spec import Disk, Ephemeral, PersistentVolumeClaim, VMSpec, Volume
from proto.state import VMI, PersistentVolume, Phase, Progress, VolumePhase
from scheduler.snapshots import default_name, restored_volume, swapped_in

SNAP = VolumeSnapshot(name="s1", uid="su", volume="data", volume_uid="vu", volume_size="1Gi", node="node1",
                      created_at=10.0)
VOL = PersistentVolume(name="data", uid="vu", size="1Gi", created_at=1.0, node="node1")


def report(phase: SnapshotPhase, taker: str = "handler", **kw: object) -> SnapshotProgress:
    return SnapshotProgress(snapshot="s1", uid="su", taker=taker, phase=phase, **kw)  # type: ignore[arg-type]


def vmi(name: str, phase: Phase, *claims: str, node: str = "node1", stopping: bool = False) -> VMI:
    spec = VMSpec(name=name, disks=[Disk(name=c) for c in claims],
                  volumes=[Volume(name=c, source=PersistentVolumeClaim(claim_name=c)) for c in claims])
    return VMI(name=name, uid=f"u-{name}", spec=spec, created_at=0.0, phase=phase, node_name=node,
               stop_requested=stopping)


def test_a_snapshot_goes_pending_in_progress_ready_for_its_first_taker_only() -> None:
    taken = apply_snapshot_progress(SNAP, report(SnapshotPhase.IN_PROGRESS, done=1, total=4), "node1", 11.0)
    assert taken is not None and taken.taken_by == "handler" and taken.progress == Progress(done=1, total=4)
    with pytest.raises(ApiError) as other:
        apply_snapshot_progress(taken, report(SnapshotPhase.READY, "vmi/vm1", size=5, digest="SHA-256=x"),
                                "node1", 12.0)
    assert other.value.code is Code.ALREADY_EXISTS
    with pytest.raises(ApiError) as no_digest:
        apply_snapshot_progress(taken, report(SnapshotPhase.READY, size=5), "node1", 12.0)
    assert no_digest.value.field == "digest"
    ready = apply_snapshot_progress(taken, report(SnapshotPhase.READY, done=5, total=5, size=5, digest="SHA-256=x"),
                                    "node1", 12.0)
    assert ready is not None and ready.phase is SnapshotPhase.READY and ready.finished_at == 12.0
    with pytest.raises(ApiError) as final:  # Ready stays Ready
        apply_snapshot_progress(ready, report(SnapshotPhase.FAILED, reason="late"), "node1", 13.0)
    assert final.value.code is Code.INVALID


def test_a_node_reports_only_on_snapshots_and_volumes_it_holds() -> None:
    with pytest.raises(ApiError) as snap:
        apply_snapshot_progress(SNAP, report(SnapshotPhase.FAILED), "node2", 11.0)
    with pytest.raises(ApiError) as vol:
        apply_volume_progress(VOL, VolumeProgress(volume="data", uid="vu", phase=VolumePhase.READY), "node2")
    assert snap.value.code is vol.value.code is Code.FORBIDDEN
    with pytest.raises(ApiError) as stale:  # an older volume of the same name
        apply_volume_progress(VOL, VolumeProgress(volume="data", uid="old", phase=VolumePhase.READY), "node1")
    assert stale.value.code is Code.NOT_FOUND
    for bad in (dict(done=5, total=4), dict(done=-1), dict(reason="a\nb")):
        with pytest.raises(ApiError):
            apply_snapshot_progress(SNAP, report(SnapshotPhase.IN_PROGRESS, **bad), "node1", 11.0)
    with pytest.raises(ApiError):
        apply_snapshot_progress(SNAP, report(SnapshotPhase.IN_PROGRESS, taker="someone"), "node1", 11.0)


def test_population_phases_and_the_old_file_kept_until_ready() -> None:
    restoring = replace(VOL, previous_uid="old")
    going = apply_volume_progress(restoring, VolumeProgress(volume="data", uid="vu", phase=VolumePhase.POPULATING,
                                                            done=10, total=100), "node1")
    assert going is not None and going.phase is VolumePhase.POPULATING and going.previous_uid == "old"
    ready = apply_volume_progress(going, VolumeProgress(volume="data", uid="vu", phase=VolumePhase.READY,
                                                        done=100, total=100), "node1")
    assert ready is not None and ready.phase is VolumePhase.READY and ready.previous_uid is None
    with pytest.raises(ApiError):  # a Ready volume is not populated again behind a guest's back
        apply_volume_progress(ready, VolumeProgress(volume="data", uid="vu", phase=VolumePhase.POPULATING), "node1")


def test_who_takes_a_snapshot() -> None:
    uses = {"vm1": {"data"}, "vm2": {"other"}}
    assert snapshot_taker(SNAP, [], uses) == "handler"
    assert snapshot_taker(SNAP, [vmi("vm2", Phase.RUNNING, "other")], uses) == "handler"
    assert snapshot_taker(SNAP, [vmi("vm1", Phase.SUCCEEDED, "data")], uses) == "handler"
    assert snapshot_taker(SNAP, [vmi("vm1", Phase.RUNNING, "data")], uses) == "vmi/vm1"
    # starting or stopping with it: nobody yet (either could hold the file)
    assert snapshot_taker(SNAP, [vmi("vm1", Phase.SCHEDULED, "data")], uses) is None
    assert snapshot_taker(SNAP, [vmi("vm1", Phase.RUNNING, "data", stopping=True)], uses) is None


def test_progress_text_and_vm_snapshot_phase() -> None:
    assert percent(Progress()) == ""
    assert percent(Progress(done=512 * 2**20, total=2**30)) == "50% (512.0 MiB of 1.0 GiB)"
    ready = replace(SNAP, phase=SnapshotPhase.READY)
    assert vm_snapshot_phase([ready, ready]) is SnapshotPhase.READY
    assert vm_snapshot_phase([ready, SNAP]) is SnapshotPhase.PENDING
    assert vm_snapshot_phase([ready, None]) is SnapshotPhase.FAILED
    assert snapshot_name_for("s", "data") == "s-data"
    with pytest.raises(ApiError) as long:
        snapshot_name_for("s" * 40, "d" * 30)
    assert long.value.field == "name"
    assert default_name("x" * 70, 1700000000.0) == "x" * 52 + "-1700000000"


def test_restore_planning() -> None:
    ready = replace(SNAP, phase=SnapshotPhase.READY)
    made = restored_volume(ready, "data2", "node2", "nu", 20.0)
    assert (made.size, made.snapshot, made.node, made.phase, made.image) == ("1Gi", "s1", "node2",
                                                                              VolumePhase.PENDING, None)
    grown = replace(VOL, size="2Gi",
                             phase=VolumePhase.READY, image="img")
    swapped = swapped_in(grown, ready, "nu")
    assert (swapped.uid, swapped.previous_uid, swapped.snapshot, swapped.image, swapped.size, swapped.phase) == (
        "nu", "vu", "s1", None, "2Gi", VolumePhase.PENDING)
    # restored twice before the first was Ready: the file from before both is the one kept
    assert swapped_in(swapped, ready, "nu2").previous_uid == "vu"
    assert swapped.node == "node1" and swapped_in(grown, ready, "nu", "node2").node == "node2"


def test_the_handler_populates_its_volumes_and_snapshots_those_at_rest() -> None:
    elsewhere = replace(VOL, name="far",
                                 node="node2")
    unplaced = replace(VOL, name="free", node=None)
    vols = [VOL, elsewhere, unplaced]
    assert plan("node1", vols, [SNAP], [], set()) == [Work("populate", "data"), Work("snapshot", "s1")]
    assert plan("node1", vols, [SNAP], [vmi("vm1", Phase.RUNNING, "data")], set()) == [Work("populate", "data")]
    assert plan("node1", vols, [SNAP], [], {Work("populate", "data")}) == [Work("snapshot", "s1")]
    assert plan("node2", vols, [SNAP], [], set()) == [Work("populate", "far")]


DOMAIN = """<domain type='qemu'><name>vm1</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/v/data-vu.qcow2'/>
<target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><source file='/vmis/vm1/root.qcow2'/><target dev='vdb' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/vmis/vm1/cidata.iso'/><target dev='sda' bus='sata'/></disk>
</devices></domain>"""


def test_one_backup_job_names_every_volume_disk_and_leaves_the_rest_out() -> None:
    xml, found = compose_backup_xml(DOMAIN, {"/v/data-vu.qcow2": "/vmis/vm1/backup-su.qcow2"})
    assert found == ["/v/data-vu.qcow2"]
    disks = {d.get("name"): d for d in ET.fromstring(xml).iterfind("./disks/disk")}
    assert ET.fromstring(xml).get("mode") == "push"
    assert disks["vda"].get("backup") == "yes" and disks["vda"].find("target").get("file") == (  # type: ignore[union-attr]
        "/vmis/vm1/backup-su.qcow2")
    assert disks["vdb"].get("backup") == disks["sda"].get("backup") == "no"
    with pytest.raises(ValueError):
        compose_backup_xml(DOMAIN, {"/v/other.qcow2": "/x.qcow2"})


def test_a_launcher_takes_the_pending_snapshots_of_its_own_volumes() -> None:
    taker = SnapshotTaker(None, None, vmi="vm1", node="node1", volumes=["data"],  # type: ignore[arg-type]
                          volumes_dir=Path("/v"), workdir=Path("/w"), domain=lambda: None)
    other_volume = replace(SNAP, volume="x")
    handlers = replace(SNAP, phase=SnapshotPhase.IN_PROGRESS, taken_by="handler")
    assert taker.wanted([SNAP, other_volume, handlers]) == [SNAP]


def test_a_launcher_follows_the_volumes_hotplug_gives_and_takes_its_guest() -> None:
    """A launcher whose guest booted without a volume watches no snapshots; once one is hotplugged it
    takes that volume's, and once removed no longer (launcher.runner follows its spec)."""
    taker = SnapshotTaker(None, None, vmi="vm1", node="node1", volumes=[],  # type: ignore[arg-type]
                          volumes_dir=Path("/v"), workdir=Path("/w"), domain=lambda: None)
    assert not taker.has_volumes.is_set() and taker.wanted([SNAP]) == []
    taker.follow(["data"])
    assert taker.has_volumes.is_set() and taker.wanted([SNAP]) == [SNAP]
    taker.follow([])
    assert taker.wanted([SNAP]) == []


def test_kubevirt_snapshot_and_restore_manifests_and_what_is_refused() -> None:
    ref = {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "keeper"}
    snap = {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s1", "namespace": "default"}, "spec": {"source": ref}}
    assert snapshotmanifest.parse(snap) == VMSnapshotCreate(vm="keeper", name="s1")
    restore = {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
               "metadata": {"name": "r1"}, "spec": {"target": ref, "virtualMachineSnapshotName": "s1"}}
    assert snapshotmanifest.parse(restore) == VMRestore(snapshot="s1", vm="keeper")
    for deadline, seconds in (("1m", 60.0), ("1h30m", 5400.0), ("90s", 90.0), ("0s", 0.0)):
        asked = snapshotmanifest.parse({**snap, "spec": {"source": ref, "failureDeadline": deadline}})
        assert asked == VMSnapshotCreate(vm="keeper", name="s1", failure_deadline_s=seconds)
    for doc, field in (
            ({**snap, "spec": {"source": ref, "failureDeadline": "1 minute"}}, "spec.failureDeadline"),
            ({**snap, "spec": {"source": ref, "failureDeadline": "-1m"}}, "spec.failureDeadline"),
            ({**snap, "spec": {"source": ref, "failureDeadline": 60}}, "spec.failureDeadline"),
            ({**snap, "spec": {"source": ref, "failureDeadline": "9999h"}}, "spec.failureDeadline"),
            ({**snap, "spec": {"source": ref, "deletionPolicy": "Retain"}}, "spec.deletionPolicy"),
            ({**snap, "spec": {"source": {**ref, "kind": "VirtualMachineInstance"}}}, "spec.source.kind"),
            ({**snap, "spec": {"source": {**ref, "name": "../x"}}}, "spec.source.name"),
            ({**restore, "spec": {"target": ref, "virtualMachineSnapshotName": "s1", "patches": []}}, "spec.patches"),
            ({**restore, "spec": {"target": ref}}, "spec.virtualMachineSnapshotName"),
            ({**snap, "apiVersion": "snapshot.kubevirt.io/v9"}, "apiVersion"),
            ({**snap, "metadata": {"name": "s1", "ownerReferences": []}}, "metadata.ownerReferences")):
        with pytest.raises(ApiError) as err:
            snapshotmanifest.parse(doc)
        assert err.value.field == field, (field, err.value)


def test_a_vm_snapshots_parts_go_in_one_job_once_all_are_recorded() -> None:
    a = replace(SNAP, name="g-a", volume="a", group="g")
    b = replace(SNAP, name="g-b", volume="b", group="g")
    solo = replace(SNAP, name="solo")
    assert whole_groups([a, solo], {"g": {"g-a", "g-b"}}) == [solo]
    assert whole_groups([a, b, solo], {"g": {"g-a", "g-b"}}) == [a, b, solo]
    assert whole_groups([a], {}) == [a]  # its VM snapshot record gone: taken alone rather than never


def test_a_snapshot_whose_launcher_ended_is_taken_over_by_the_handler() -> None:
    claimed = replace(SNAP, phase=SnapshotPhase.IN_PROGRESS, taken_by="vmi/vm1")
    running = [vmi("vm1", Phase.RUNNING, "data")]
    assert not orphaned(claimed, running)
    assert orphaned(claimed, [vmi("vm1", Phase.SUCCEEDED, "data")]) and orphaned(claimed, [])
    assert plan("node1", [], [claimed], running, set()) == []
    assert plan("node1", [], [claimed], [], set()) == [Work("snapshot", "s1")]
    with pytest.raises(ApiError):  # while its launcher runs, it is the launcher's
        apply_snapshot_progress(claimed, report(SnapshotPhase.IN_PROGRESS), "node1", 11.0)
    taken = apply_snapshot_progress(claimed, report(SnapshotPhase.IN_PROGRESS), "node1", 11.0, taker_gone=True)
    assert taken is not None and taken.taken_by == "handler"
    with pytest.raises(ApiError):  # a launcher's is never taken over by another launcher
        apply_snapshot_progress(claimed, report(SnapshotPhase.IN_PROGRESS, taker="vmi/vm2"), "node1", 11.0,
                                taker_gone=True)


def test_a_volume_a_guest_only_reads_is_snapshotted_at_rest() -> None:
    spec = VMSpec(name="vm1", disks=[Disk(name="data"), Disk(name="base")],
                  volumes=[Volume(name="data", source=PersistentVolumeClaim(claim_name="data")),
                           Volume(name="base", source=Ephemeral(claim_name="golden"))])
    assert written_volumes(spec) == ["data"]
    reader = replace(vmi("vm1", Phase.RUNNING), spec=spec)
    golden = replace(SNAP, volume="golden")
    assert plan("node1", [], [golden], [reader], set()) == [Work("snapshot", "s1")]
    assert plan("node1", [], [SNAP], [reader], set()) == []  # data: its launcher's


def test_a_vm_snapshot_past_its_failure_deadline_fails_what_no_node_began() -> None:
    record = VMSnapshot(name="g", uid="gu", vm="vm1", created_at=100.0, volumes={"a": "g-a", "b": "g-b"},
                        failure_deadline_s=60.0)
    waiting = replace(SNAP, name="g-a", volume="a", group="g")  # its disk never attached, its node down...
    copying = replace(SNAP, name="g-b", volume="b", group="g", phase=SnapshotPhase.IN_PROGRESS, taken_by="vmi/vm1")
    assert past_deadline(record, [waiting, copying], 159.9) == []  # not yet
    assert past_deadline(record, [waiting, copying], 160.0) == [waiting]  # a copy under way is its taker's
    assert past_deadline(replace(record, failure_deadline_s=0.0), [waiting], 1e9) == []  # 0: no deadline
    ready = replace(SNAP, name="g-b", phase=SnapshotPhase.READY, group="g")
    assert past_deadline(record, [ready, replace(ready, name="g-a")], 1e9) == []  # taken in time
    assert past_deadline(record, [waiting, replace(copying, phase=SnapshotPhase.FAILED)], 1e9) == []  # failed already

    failed = failed_by_deadline(waiting, record, 160.0)
    assert failed is not None and failed.phase is SnapshotPhase.FAILED and failed.finished_at == 160.0
    assert failed.reason == f"{DEADLINE_EXCEEDED}: not taken within 1m0s (failureDeadline)"
    assert vm_snapshot_phase([failed, copying]) is SnapshotPhase.FAILED
    assert failed_by_deadline(copying, record, 160.0) is None  # a node claimed it first: its claim stands
    assert failed_by_deadline(replace(waiting, group="other"), record, 160.0) is None
    with pytest.raises(ApiError):  # and a node's claim after the deadline failed it is refused
        apply_snapshot_progress(failed, report(SnapshotPhase.IN_PROGRESS), "node1", 161.0)


def test_the_copies_of_a_vm_snapshot_failed_by_its_deadline_are_discarded_as_kubevirt_deletes_its_content() -> None:
    record = VMSnapshot(name="g", uid="gu", vm="vm1", created_at=100.0, volumes={"a": "g-a", "b": "g-b", "c": "g-c"},
                        failure_deadline_s=60.0)
    waiting = replace(SNAP, name="g-a", volume="a", group="g")
    ready = replace(SNAP, name="g-b", uid="bu", volume="b", group="g", phase=SnapshotPhase.READY, size=4096,
                    digest="SHA-256=x")
    copying = replace(SNAP, name="g-c", volume="c", group="g", phase=SnapshotPhase.IN_PROGRESS, taken_by="handler")
    assert to_discard(record, [waiting, ready, copying]) == []  # not failed yet: nothing goes
    failed = failed_by_deadline(waiting, record, 160.0)
    assert failed is not None and failed_at_deadline(record, [failed, ready, copying])
    assert to_discard(record, [failed, ready, copying]) == [ready]  # the copy under way: once it is Ready
    assert to_discard(record, [failed, ready, replace(copying, phase=SnapshotPhase.READY)]) == [
        ready, replace(copying, phase=SnapshotPhase.READY)]

    gone = discarded(ready, record, 161.0)
    assert gone is not None and gone.phase is SnapshotPhase.FAILED and is_discarded(gone)
    assert (gone.size, gone.digest, gone.finished_at, gone.uid) == (0, "", 161.0, "bu")  # its object's name kept
    assert gone.reason.startswith(f"{DEADLINE_EXCEEDED}: not taken within 1m0s")
    assert discarded(gone, record, 162.0) is None and discarded(copying, record, 162.0) is None
    assert discarded(replace(ready, group="other"), record, 162.0) is None
    assert not is_discarded(failed) and not is_discarded(ready) and not is_discarded(None)
    assert to_discard(record, [failed, gone, copying]) == []

    # a VM snapshot failed otherwise (a copy that failed) keeps what it holds for the user to look at
    broken = replace(waiting, phase=SnapshotPhase.FAILED, reason="qemu-img: read error")
    assert not failed_at_deadline(record, [broken, ready]) and to_discard(record, [broken, ready]) == []
