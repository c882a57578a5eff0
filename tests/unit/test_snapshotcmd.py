"""The CLI's snapshot and restore verbs against a fake API: what they ask, and the progress lines
`--wait` prints while the node copies the bytes."""

from __future__ import annotations

from typing import Any, cast

import pytest
from msgspec.structs import replace

from ctl import cli, snapshotcmd
from ctl.client import ApiClient
from proto.api import VolumeReply
from proto.errors import ApiError
from proto.snapshotapi import SnapshotReply, VMSnapshotCreate, VMSnapshotView, VolumeRestore
from proto.snapshots import SnapshotPhase, VMSnapshot, VolumeSnapshot
from proto.state import PersistentVolume, Progress, VolumePhase

SNAP = VolumeSnapshot(name="s1", uid="su", volume="data", volume_uid="vu", volume_size="1Gi", node="node1",
                      created_at=1.0)
VOL = PersistentVolume(name="data2", uid="nu", size="1Gi", created_at=1.0, node="node2", snapshot="s1")


class FakeApi:
    """Answers each (kind, verb) from a script; later gets see the next state."""

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = {k: iter(v) for k, v in answers.items()}
        self.asked: list[tuple[str, str, Any]] = []

    async def call(self, kind: str, verb: str, body: Any, reply: type[Any]) -> Any:
        self.asked.append((kind, verb, body))
        return next(self.answers[(kind, verb)])


async def test_volume_snapshot_wait_prints_progress(capsys: pytest.CaptureFixture[str]) -> None:
    gets = [replace(SNAP, phase=SnapshotPhase.IN_PROGRESS, progress=Progress(done=2**29, total=2**30)),
            replace(SNAP, phase=SnapshotPhase.READY, size=2**30)]
    api = FakeApi({("snapshot", "create"): [SnapshotReply(item=SNAP)],
                   ("snapshot", "get"): [SnapshotReply(item=s) for s in gets]})
    args = cli.parser().parse_args(["volume", "snapshot", "data", "--name", "s1", "--wait"])
    assert await snapshotcmd.volume_snapshot(cast(ApiClient, api), args) == 0
    out = capsys.readouterr().out
    assert "snapshot/s1: InProgress 50% (512.0 MiB of 1.0 GiB)" in out and "snapshot/s1: Ready" in out, out


async def test_volume_restore_to_another_node_waits_for_its_population(capsys: pytest.CaptureFixture[str]) -> None:
    gets = [replace(VOL, phase=VolumePhase.POPULATING, progress=Progress(done=1, total=4)),
            replace(VOL, phase=VolumePhase.READY)]
    api = FakeApi({("volume", "restore"): [VolumeReply(item=VOL)],
                   ("volume", "get"): [VolumeReply(item=v) for v in gets]})
    args = cli.parser().parse_args(["volume", "restore", "s1", "--to", "data2", "--node", "node2", "--wait"])
    assert await snapshotcmd.volume_restore(cast(ApiClient, api), args) == 0
    assert api.asked[0] == ("volume", "restore", VolumeRestore(snapshot="s1", name="data2", node="node2"))
    out = capsys.readouterr().out
    assert "volume/data2: Populating 25%" in out and "volume/data2: Ready" in out, out


def test_the_verbs_parse() -> None:
    p = cli.parser()
    listed = p.parse_args(["volume", "snapshot", "list"])
    assert (listed.volume_command, listed.volume) == ("snapshot", "list")
    vm = p.parse_args(["vm", "snapshot", "testvm", "--name", "s1", "--wait"])
    assert (vm.command, vm.vm_command, vm.vm, vm.name, vm.wait) == ("vm", "snapshot", "testvm", "s1", True)
    assert p.parse_args(["vm", "restore", "s1"]).snapshot == "s1"


async def test_vm_snapshot_asks_for_its_failure_deadline_and_waits_until_it_fails(
        capsys: pytest.CaptureFixture[str]) -> None:
    record = VMSnapshot(name="g", uid="gu", vm="vm1", created_at=1.0, volumes={"data": "g-data"},
                        failure_deadline_s=90.0)
    part = replace(SNAP, name="g-data", group="g")
    failed = replace(part, phase=SnapshotPhase.FAILED, reason="snapshot deadline exceeded: not taken within 1m30s "
                                                              "(failureDeadline)")
    api = FakeApi({("vmsnapshot", "create"): [VMSnapshotView(item=record, phase=SnapshotPhase.PENDING, parts=[part])],
                   ("snapshot", "get"): [SnapshotReply(item=part), SnapshotReply(item=failed)]})
    args = cli.parser().parse_args(["vm", "snapshot", "vm1", "--name", "g", "--failure-deadline", "1m30s", "--wait"])
    with pytest.raises(ApiError) as err:
        await snapshotcmd.run_vm(cast(ApiClient, api), args)
    assert api.asked[0] == ("vmsnapshot", "create", VMSnapshotCreate(vm="vm1", name="g", failure_deadline_s=90.0))
    assert "snapshot g-data failed: snapshot deadline exceeded" in err.value.message
    # no deadline asked: the API's default; a deadline that is no duration is refused before anything is sent
    plain = FakeApi({("vmsnapshot", "create"): [VMSnapshotView(item=record, phase=SnapshotPhase.PENDING, parts=[])]})
    await snapshotcmd.run_vm(cast(ApiClient, plain), cli.parser().parse_args(["vm", "snapshot", "vm1"]))
    assert plain.asked == [("vmsnapshot", "create", VMSnapshotCreate(vm="vm1"))]
    refused = FakeApi({})
    with pytest.raises(ApiError) as bad:
        await snapshotcmd.run_vm(cast(ApiClient, refused),
                                 cli.parser().parse_args(["vm", "snapshot", "vm1", "--failure-deadline", "5 min"]))
    assert bad.value.field == "failure-deadline" and refused.asked == []
