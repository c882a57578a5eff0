"""The API's messages for snapshots and restores (``virtbus.api.snapshot.*``, ``volume.restore``,
``vmsnapshot.*``, ``vmrestore.create``); the records are proto.snapshots'."""

from __future__ import annotations

from proto.api import Message
from proto.snapshots import SnapshotPhase, VMSnapshot, VolumeSnapshot


class SnapshotCreate(Message, frozen=True):
    """``virtbus volume snapshot VOLUME [--name SNAP]``."""

    volume: str
    name: str | None = None  # default: <volume>-<timestamp>


class SnapshotReply(Message, frozen=True):
    item: VolumeSnapshot


class SnapshotList(Message, frozen=True):
    items: list[VolumeSnapshot]


class VolumeRestore(Message, frozen=True):
    """``virtbus volume restore SNAP --to NAME [--node N]``: a new volume whose first content is the snapshot."""

    snapshot: str
    name: str
    node: str | None = None


class VMSnapshotCreate(Message, frozen=True):
    """``virtbus vm snapshot VM [--name S]`` (KubeVirt's VirtualMachineSnapshot)."""

    vm: str
    name: str | None = None
    failure_deadline_s: float | None = None  # spec.failureDeadline; default 5 minutes, 0: none


class VMSnapshotView(Message, frozen=True):
    item: VMSnapshot
    phase: SnapshotPhase
    parts: list[VolumeSnapshot]


class VMSnapshotList(Message, frozen=True):
    items: list[VMSnapshotView]


class VMRestore(Message, frozen=True):
    """``virtbus vm restore SNAP`` (KubeVirt's VirtualMachineRestore): the VM must be stopped."""

    snapshot: str
    vm: str | None = None  # the target; must be the snapshot's VM when given
    node: str | None = None  # the volumes' new files there (the VM follows them); default: where they are
