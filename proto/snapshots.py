"""Volume snapshots and volume population: the records, the node's reports, and the pure rules.

A snapshot (KubeVirt's VolumeSnapshot, and per VM its VirtualMachineSnapshot) is a record in KV
bucket ``snapshots`` and one object in the object store ``volumesnapshots`` (a compact qcow2 of the
volume at one point in time), so a volume outlives its node: ``volume restore`` makes a new volume
on any node whose first content is the snapshot.

Who copies the bytes: the node holding the volume. Its handler when no instance there uses the
volume (qemu-img reads the file, which QEMU's image locks keep from a guest meanwhile); the launcher
of the instance running with it otherwise, with one libvirt backup job for all of the VM's volumes
taken together, so they are one point in time while the guest runs. The node reports progress on
``virtbus.nodeapi.<node>.snapshot-progress`` / ``.volume-progress``; the control plane applies a
report only to a record on that node (Kubernetes' NodeRestriction), and the first taker wins.
"""

from __future__ import annotations

import enum

import msgspec

from proto import durations
from proto.api import Message
from proto.errors import ApiError, Code
from proto.spec import PersistentVolumeClaim, VMSpec
from proto.state import FINAL_PHASES, VMI, PersistentVolume, Phase, Progress, State, VolumePhase

# KubeVirt's VirtualMachineSnapshot spec.failureDeadline: a VM snapshot not taken by then is Failed.
# Its default, 5 minutes (KubeVirt's DefaultFailureDeadline); 0 waits for ever.
DEFAULT_FAILURE_DEADLINE_S = 300.0
MAX_FAILURE_DEADLINE_S = 7 * 24 * 3600.0
DEADLINE_EXCEEDED = "snapshot deadline exceeded"
DISCARDED = "its copy was discarded with the VM snapshot"  # how a discarded part's reason ends

VERB_SNAPSHOT_PROGRESS = "snapshot-progress"
VERB_VOLUME_PROGRESS = "volume-progress"
TAKER_HANDLER = "handler"


class SnapshotPhase(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    READY = "Ready"
    FAILED = "Failed"


class VolumeSnapshot(State, frozen=True):
    name: str
    uid: str  # the object's name in the store: a snapshot deleted and made again never reads the old bytes
    volume: str
    volume_uid: str
    volume_size: str
    node: str  # the node holding the volume: the only one that may report on it
    created_at: float
    phase: SnapshotPhase = SnapshotPhase.PENDING
    taken_by: str = ""  # "handler" or "vmi/<name>": who copies it (the first to claim it)
    progress: Progress = Progress()
    size: int = 0  # bytes in the object store
    digest: str = ""  # the object's digest, as the store wrote it; a restore checks it
    finished_at: float | None = None
    reason: str = ""
    group: str | None = None  # the VirtualMachineSnapshot it is part of: taken in one job with the others
    online: bool = False  # taken while a guest ran (libvirt backup), else from the file at rest


class VMSnapshot(State, frozen=True):
    """KubeVirt's VirtualMachineSnapshot: one volume snapshot per volume of the VM, one point in time."""

    name: str
    uid: str
    vm: str
    created_at: float
    volumes: dict[str, str] = {}  # volume name -> its snapshot's name
    spec: VMSpec | None = None  # the VM's spec when taken (a clone from the snapshot is made of it)
    failure_deadline_s: float = DEFAULT_FAILURE_DEADLINE_S  # from created_at; 0: none


class SnapshotProgress(Message, frozen=True):
    """A node's word on a snapshot of a volume it holds."""

    snapshot: str
    uid: str
    taker: str
    phase: SnapshotPhase
    done: int = 0
    total: int = 0
    size: int = 0
    digest: str = ""
    reason: str = ""
    online: bool = False


class VolumeProgress(Message, frozen=True):
    """A node's word on the population of a volume it holds."""

    volume: str
    uid: str
    phase: VolumePhase
    done: int = 0
    total: int = 0
    reason: str = ""


class ProgressReply(Message, frozen=True):
    applied: bool
    phase: str


MAX_REASON = 1024
_SNAPSHOT_NEXT = {
    SnapshotPhase.PENDING: {SnapshotPhase.IN_PROGRESS, SnapshotPhase.FAILED},
    SnapshotPhase.IN_PROGRESS: {SnapshotPhase.IN_PROGRESS, SnapshotPhase.READY, SnapshotPhase.FAILED},
}
_VOLUME_NEXT = {
    VolumePhase.PENDING: {VolumePhase.POPULATING, VolumePhase.READY, VolumePhase.FAILED},
    VolumePhase.POPULATING: {VolumePhase.POPULATING, VolumePhase.READY, VolumePhase.FAILED},
}


def _check_counts(done: int, total: int, reason: str) -> None:
    if done < 0 or total < 0 or (total and done > total):
        raise ApiError(Code.INVALID, f"progress {done}/{total} is not a fraction", "done")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise ApiError(Code.INVALID, f"reason must be printable text of at most {MAX_REASON} characters", "reason")


def check_taker(taker: str) -> None:
    kind, _, vmi = taker.partition("/")
    if taker != TAKER_HANDLER and not (kind == "vmi" and vmi):
        raise ApiError(Code.INVALID, "the taker is 'handler' or 'vmi/<name>'", "taker")


def apply_snapshot_progress(snap: VolumeSnapshot, report: SnapshotProgress, node: str, now: float, *,
                            taker_gone: bool = False) -> VolumeSnapshot | None:
    """Pure: the snapshot after its node's report; None when nothing changes. Raises what the node may not say.
    taker_gone: the launcher that claimed it no longer runs (its instance ended or went, so it never
    finishes): the node's handler may take it over, the volume now at rest."""
    if snap.node != node:
        raise ApiError(Code.FORBIDDEN, f"snapshot {snap.name} is of a volume on node {snap.node}, not {node}")
    if snap.uid != report.uid:
        raise ApiError(Code.NOT_FOUND, f"snapshot {snap.name} is now {snap.uid}, not {report.uid}")
    check_taker(report.taker)
    _check_counts(report.done, report.total, report.reason)
    if taker_gone and report.taker == TAKER_HANDLER and snap.taken_by.startswith("vmi/"):
        snap = msgspec.structs.replace(snap, taken_by="")
    if snap.taken_by and snap.taken_by != report.taker:
        raise ApiError(Code.ALREADY_EXISTS, f"snapshot {snap.name} is being taken by {snap.taken_by}", "taker")
    if report.phase not in _SNAPSHOT_NEXT.get(snap.phase, set()):
        if report.phase is snap.phase:
            return None
        raise ApiError(Code.INVALID, f"snapshot {snap.name} is {snap.phase.value}; it cannot become "
                                      f"{report.phase.value}", "phase")
    if report.phase is SnapshotPhase.READY and (report.size <= 0 or not report.digest.startswith("SHA-256=")):
        raise ApiError(Code.INVALID, "a Ready snapshot has a size and a SHA-256 digest", "digest")
    final = report.phase in (SnapshotPhase.READY, SnapshotPhase.FAILED)
    new = msgspec.structs.replace(
        snap, phase=report.phase, taken_by=report.taker, progress=Progress(done=report.done, total=report.total),
        size=report.size or snap.size, digest=report.digest or snap.digest, reason=report.reason,
        online=report.online or snap.online, finished_at=now if final else None)
    return None if new == snap else new


def written_volumes(spec: VMSpec) -> list[str]:
    """Pure: the volumes a VM's guest writes (persistentVolumeClaim, dataVolume), which its launcher
    snapshots while it runs; an ephemeral use only reads its volume (QEMU writes an overlay), so
    that volume is at rest and its node's handler copies it."""
    return [v.source.claim_name for v in spec.volumes if isinstance(v.source, PersistentVolumeClaim)]


def orphaned(snap: VolumeSnapshot, vmis: list[VMI]) -> bool:
    """Pure: an InProgress snapshot whose launcher no longer runs on its node: its instance ended or went."""
    if snap.phase is not SnapshotPhase.IN_PROGRESS or not snap.taken_by.startswith("vmi/"):
        return False
    name = snap.taken_by.removeprefix("vmi/")
    return not any(v.name == name and v.node_name == snap.node and v.phase not in FINAL_PHASES for v in vmis)


def snapshot_taker(snap: VolumeSnapshot, vmis: list[VMI], claims_of: dict[str, set[str]]) -> str | None:
    """Pure: who on the snapshot's node copies it: the launcher of the instance running there with
    the volume ("vmi/<name>"), the handler when no instance there uses it, or None (wait: an instance
    is starting or stopping with it, and either may hold the file). claims_of: VMI -> volumes it uses."""
    users = [v for v in vmis if v.node_name == snap.node and snap.volume in claims_of.get(v.name, set())
             and v.phase not in FINAL_PHASES]
    if not users:
        return TAKER_HANDLER
    running = [v for v in users if v.phase is Phase.RUNNING and not v.stop_requested]
    if len(running) == 1 and len(users) == 1:
        return f"vmi/{running[0].name}"
    return None


def apply_volume_progress(volume: PersistentVolume, report: VolumeProgress, node: str) -> PersistentVolume | None:
    """Pure: the volume after its node's word on its population; None when nothing changes."""
    if volume.node != node:
        raise ApiError(Code.FORBIDDEN, f"volume {volume.name} is on node {volume.node}, not {node}")
    if volume.uid != report.uid:
        raise ApiError(Code.NOT_FOUND, f"volume {volume.name} is now {volume.uid}, not {report.uid}")
    _check_counts(report.done, report.total, report.reason)
    current = volume.phase
    if report.phase not in _VOLUME_NEXT.get(current, set()):
        if report.phase is current:
            return None
        raise ApiError(Code.INVALID, f"volume {volume.name} is {current.value}; it cannot become "
                                      f"{report.phase.value}", "phase")
    ready = report.phase is VolumePhase.READY
    new = msgspec.structs.replace(
        volume, phase=report.phase, progress=Progress(done=report.done, total=report.total),
        reason=report.reason, previous_uid=None if ready else volume.previous_uid)
    return None if new == volume else new


def percent(progress: Progress) -> str:
    """Pure: '42% (1.0 GiB of 2.4 GiB)'-style text; '' before a total is known."""
    if progress.total <= 0:
        return ""
    share = min(100, progress.done * 100 // progress.total)
    return f"{share}% ({_human(progress.done)} of {_human(progress.total)})"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def snapshot_name_for(vm_snapshot: str, volume: str) -> str:
    """Pure: the name of a VM snapshot's snapshot of one volume; refused when it would be no DNS-1123 label."""
    name = f"{vm_snapshot}-{volume}"
    if len(name) > 63:
        raise ApiError(Code.INVALID, f"snapshot {vm_snapshot!r} of volume {volume!r} would be named {name!r}, "
                                     "over 63 characters; use a shorter name", "name")
    return name


def deadline_of(record: VMSnapshot) -> float | None:
    """Pure: when a VM snapshot not taken by then fails (seconds since the epoch); None: never."""
    return record.created_at + record.failure_deadline_s if record.failure_deadline_s > 0 else None


def past_deadline(record: VMSnapshot, parts: list[VolumeSnapshot | None], now: float) -> list[VolumeSnapshot]:
    """Pure: the parts a VM snapshot past its failure deadline fails now: those no node has begun to
    copy (Pending: a node down, a hotplugged disk never attached). A copy under way is left to finish
    or fail by its taker, whose reports a Failed record would refuse while it still wrote the object;
    the VM snapshot is Failed as soon as one part is. None once it is Ready or Failed."""
    deadline = deadline_of(record)
    if deadline is None or now < deadline or vm_snapshot_phase(parts) in (SnapshotPhase.READY, SnapshotPhase.FAILED):
        return []
    return [p for p in parts if p is not None and p.phase is SnapshotPhase.PENDING]


def failed_by_deadline(snap: VolumeSnapshot, record: VMSnapshot, now: float) -> VolumeSnapshot | None:
    """Pure: a part failed for its VM snapshot's deadline; None when it is no longer Pending (a node
    claimed it meanwhile: the compare-and-set that wrote that claim wins)."""
    if snap.phase is not SnapshotPhase.PENDING or snap.group != record.name:
        return None
    return msgspec.structs.replace(snap, phase=SnapshotPhase.FAILED, finished_at=now, reason=deadline_reason(record))


def failed_at_deadline(record: VMSnapshot, parts: list[VolumeSnapshot | None]) -> bool:
    """Pure: whether the VM snapshot was Failed by its deadline (a part of it says so)."""
    return any(p is not None and p.group == record.name and p.phase is SnapshotPhase.FAILED
               and p.reason.startswith(DEADLINE_EXCEEDED) for p in parts)


def to_discard(record: VMSnapshot, parts: list[VolumeSnapshot | None]) -> list[VolumeSnapshot]:
    """Pure: the parts of a VM snapshot Failed by its deadline that hold a copy: those Ready. KubeVirt
    deletes such a snapshot's content (it can never be restored whole), so their objects go too. A
    copy still under way is discarded once it is Ready; a VM snapshot Failed otherwise (a copy that
    failed) keeps its content for the user to look at and delete, as KubeVirt's does."""
    if not failed_at_deadline(record, parts):
        return []
    return [p for p in parts if p is not None and p.group == record.name and p.phase is SnapshotPhase.READY]


def discarded(snap: VolumeSnapshot, record: VMSnapshot, now: float) -> VolumeSnapshot | None:
    """Pure: a Ready part of a VM snapshot Failed by its deadline, Failed in turn: its object is to be
    deleted. None when it is not Ready (already discarded, or never copied)."""
    if snap.phase is not SnapshotPhase.READY or snap.group != record.name:
        return None
    return msgspec.structs.replace(snap, phase=SnapshotPhase.FAILED, finished_at=now, size=0, digest="",
                                   reason=f"{deadline_reason(record)}; {DISCARDED}")


def is_discarded(snap: VolumeSnapshot | None) -> bool:
    """Pure: whether this part's copy was discarded (its object is deleted, or is to be)."""
    return snap is not None and snap.phase is SnapshotPhase.FAILED and snap.reason.endswith(DISCARDED)


def deadline_reason(record: VMSnapshot) -> str:
    """Pure: why a VM snapshot failed at its deadline, as its parts and its event say it."""
    return f"{DEADLINE_EXCEEDED}: not taken within {durations.spelled(record.failure_deadline_s)} (failureDeadline)"


def vm_snapshot_phase(parts: list[VolumeSnapshot | None]) -> SnapshotPhase:
    """Pure: a VM snapshot is Ready when all its volumes' are, Failed if one failed or is gone."""
    if any(p is None or p.phase is SnapshotPhase.FAILED for p in parts):
        return SnapshotPhase.FAILED
    phases = {p.phase for p in parts if p is not None}
    if phases <= {SnapshotPhase.READY}:
        return SnapshotPhase.READY
    return SnapshotPhase.IN_PROGRESS if SnapshotPhase.IN_PROGRESS in phases else SnapshotPhase.PENDING

