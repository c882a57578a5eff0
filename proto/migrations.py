"""Live migration, pure: KubeVirt's VirtualMachineInstanceMigration (``virtbus migrate``), what an
instance's record says of its migration (status.migrationState), and the rules for each step.

A migration moves a running instance to another node without stopping its guest. Its steps, each a
phase of the migration, are written on the instance's ``migration_state`` by CAS:
- Scheduling: the control plane took the migration up (scheduler.migrations) and looks for a node.
- Scheduled: the binder chose a target node and holds room for the instance there as well as on its
  source; the target node's handler starts a launcher for it, which prepares disks, NICs and a libvirtd
  of its own and waits.
- TargetReady: that launcher said where it listens (its node's address and a port). The token the
  source must send first on each connection is not in the record: the source asks the target for it
  (proto.migrationtoken).
- Running: the source's launcher moves the guest: its libvirtd's peer-to-peer migration to the target's
  libvirtd, memory and the disks that live with the run (containerDisk overlays, emptyDisks) copied
  through the two launchers.
- Succeeded: the guest runs on the target; the instance is bound there now, with the target pod's
  address. Failed: it runs on where it was.
The VirtualMachineInstanceMigration record (BUCKET_MIGRATIONS) follows its instance's phases.

What cannot move is refused when the migration is asked, in KubeVirt's words: an instance that does
not run, one whose pod network is not masqueraded (the pod IP changes with the node, which a bridged
guest holds itself), and one with disks on one node's storage (volumes, hostDisks).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from proto import netcheck
from proto.api import Message
from proto.errors import ApiError, Code
from proto.nodeapi import MAX_REASON
from proto.schema import IGNORED, METADATA, STR, Object, check_kind, required
from proto.spec import HostDisk, claims
from proto.state import (
    FINAL_MIGRATION_PHASES,
    FINAL_PHASES,
    VMI,
    MigrationPhase,
    MigrationState,
    MigrationTarget,
    Phase,
    State,
    VMIInterface,
)
from proto.subjects import is_dns1123_label

KIND = "VirtualMachineInstanceMigration"
API_VERSIONS = ("kubevirt.io/v1", "kubevirt.io/v1alpha3")
_MANIFEST = Object({"apiVersion": STR, "kind": STR, "metadata": METADATA, "spec": Object({"vmiName": STR}),
                    "status": IGNORED})  # as `get vmim -o yaml` writes it back
MAX_NAME = 63
# A target that has not said it is ready this long after it was chosen is given up (KubeVirt gives a
# target pod that does not start five minutes too).
TARGET_READY_TIMEOUT_S = 300.0
_SAFE_DIR = re.compile(r"/[A-Za-z0-9._/-]{0,1023}")


class Migration(State, frozen=True):
    """A VirtualMachineInstanceMigration: the request, and how it went."""

    name: str
    uid: str
    vmi_name: str
    created_at: float
    phase: MigrationPhase = MigrationPhase.PENDING
    reason: str = ""
    source_node: str | None = None
    target_node: str | None = None
    finished_at: float | None = None
    labels: dict[str, str] = {}


FINAL = FINAL_MIGRATION_PHASES
_replace = msgspec.structs.replace


class MigrationCreate(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    vmi_name: str
    name: str | None = None  # None: kubevirt-migrate-vm-<5 random>, as virtctl's generateName
    labels: dict[str, str] = {}


class MigrationReply(msgspec.Struct, frozen=True, kw_only=True):
    item: Migration


class MigrationList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Migration]


def target_key(vmi: str) -> str:
    """The binder's name for the room a migration's target holds (scheduler.capacity): no VMI is
    called so, as no VMI name has a slash."""
    return f"{vmi}/migration-target"


def in_flight(vmi: VMI | None) -> MigrationState | None:
    """The instance's migration while it is under way, and the instance still runs."""
    if vmi is None or vmi.migration_state is None or vmi.migration_state.final or vmi.phase is not Phase.RUNNING:
        return None
    return vmi.migration_state


def target_of(vmi: VMI | None) -> str | None:
    """The node a migration under way has chosen for the instance, if any."""
    state = in_flight(vmi)
    return state.target_node if state is not None else None


def is_migration(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == KIND


def parse(obj: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """A VirtualMachineInstanceMigration manifest: (its name, the instance's name, its labels)."""
    check_kind(obj, API_VERSIONS, KIND)
    tree = _MANIFEST.walk(obj, "")
    meta = required(tree, "metadata", "")
    name = required(meta, "name", "metadata")
    vmi = required(required(tree, "spec", ""), "vmiName", "spec")
    check_name(name, "metadata.name")
    check_name(vmi, "spec.vmiName", "a VMI's name")
    return name, vmi, meta.get("labels", {})


def check_name(name: str, field: str, what: str = "a migration's name") -> None:
    if len(name) > MAX_NAME or not is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"{name[:64]!r}: {what} is a DNS-1123 label (lowercase letters, digits and "
                                     f"'-', at most {MAX_NAME})", field)


def manifest(item: Migration) -> dict[str, Any]:
    """As KubeVirt writes one: parse reads its spec back."""
    meta: dict[str, Any] = {"name": item.name, "namespace": "default", "uid": item.uid}
    if item.labels:
        meta["labels"] = item.labels
    status: dict[str, Any] = {"phase": item.phase.value}
    state: dict[str, Any] = {k: v for k, v in (("sourceNode", item.source_node), ("targetNode", item.target_node))
                             if v}
    if item.phase in FINAL:
        state["completed" if item.phase is MigrationPhase.SUCCEEDED else "failed"] = True
    if state:
        status["migrationState"] = state
    if item.reason:
        status["reason"] = item.reason
    return {"apiVersion": API_VERSIONS[0], "kind": KIND, "metadata": meta, "spec": {"vmiName": item.vmi_name},
            "status": status}


def refusal(vmi: VMI) -> ApiError | None:
    """Pure: KubeVirt's admission's refusal of a migration of this instance (its words, its reason when
    the instance is not LiveMigratable), None when it may move."""
    refused = _admission(vmi)
    if refused is not None:
        return refused
    condition = live_migratable(vmi)
    if condition is not None:
        reason, message = condition
        return ApiError(Code.INVALID, f"Cannot migrate VMI, Reason: {reason}, Message: {message}", "spec.vmiName")
    return None


def _admission(vmi: VMI) -> ApiError | None:
    """What refuses a migration whatever the instance's spec: it does not run, or already moves."""
    if vmi.phase is not Phase.RUNNING or vmi.stop_requested or vmi.deleting:
        return ApiError(Code.INVALID, "Cannot migrate VMI in finalized state." if vmi.phase in FINAL_PHASES
                        else f"Cannot migrate VMI {vmi.name}: it is not running (phase {vmi.phase.value})",
                        "spec.vmiName")
    if vmi.node_name is None:
        return ApiError(Code.INVALID, f"Cannot migrate VMI {vmi.name}: it has no node", "spec.vmiName")
    state = in_flight(vmi)
    if state is not None:
        return ApiError(Code.CONFLICT, f"in-flight migration detected. Active migration job ({state.migration_uid}) "
                                       f"is currently already in progress for VMI {vmi.name}.", "spec.vmiName")
    return None


def live_migratable(vmi: VMI) -> tuple[str, str] | None:
    """Pure: why the instance's spec keeps it from moving, as KubeVirt's LiveMigratable condition says
    it (reason, message); None when nothing does."""
    spec = vmi.spec
    if spec.high_availability:
        return ("HighAvailability", "cannot migrate VMI: it is highly available (virtbus's lease fences it to the "
                                    "node it runs on; stop it to move it)")
    bindings = {i.name: i.binding for i in spec.interfaces}
    for net in spec.networks:  # secondary (multus) networks move: the guest keeps its MAC and addresses there
        if net.kind == "pod" and bindings.get(net.name) != "masquerade":
            return ("InterfaceNotLiveMigratable", "cannot migrate VMI which does not use masquerade or a migratable "
                                                  "plugin to connect to the pod network")
    for _, claim in claims(spec.volumes):
        return ("DisksNotLiveMigratable", f"cannot migrate VMI: PVC {claim} is not shared, live migration requires "
                                          "that all PVCs must be shared (using ReadWriteMany access mode)")
    if any(isinstance(v.source, HostDisk) for v in spec.volumes):
        return "DisksNotLiveMigratable", "cannot migrate VMI with non-shared HostDisk"
    return None


def not_migratable(vmi: VMI) -> str | None:
    """Pure: why this instance cannot be live-migrated, in KubeVirt's words (its admission's, or its
    LiveMigratable condition's message), None when it can."""
    refused = _admission(vmi)
    if refused is not None:
        return refused.message
    condition = live_migratable(vmi)
    return condition[1] if condition is not None else None


EvictionWay = Literal["migrate", "evict", "refuse"]


def eviction_way(vmi: VMI, strategy: str) -> tuple[EvictionWay, str]:
    """Pure: what an eviction (a drain's) does to a running instance by its evictionStrategy, as
    KubeVirt's: LiveMigrate moves it, or refuses when it cannot move; LiveMigrateIfPossible moves it
    when it can, else stops it; None stops it (its VM runs it again elsewhere); External refuses, an
    outside controller being the one to move it. The reason says why it is refused."""
    if strategy == "External":
        return "refuse", "an outside controller is to move it"
    if strategy in ("LiveMigrate", "LiveMigrateIfPossible"):
        if in_flight(vmi) is not None:
            return "migrate", ""  # already moving: the eviction waits for it
        why = not_migratable(vmi)
        if why is None:
            return "migrate", ""
        if strategy == "LiveMigrate":
            return "refuse", f"it is to move alive and cannot: {why}"
    return "evict", ""


def check_target(port: int, node_dir: str) -> None:
    """What a target's launcher says of itself becomes a connection and paths in the source's domain: a
    port, an absolute path of plain characters (it is put in the domain's XML)."""
    if not 0 < port < 65536:
        raise ApiError(Code.INVALID, f"port {port} is not a TCP port", "port")
    if not _SAFE_DIR.fullmatch(node_dir) or "/../" in f"{node_dir}/" or "//" in node_dir:
        raise ApiError(Code.INVALID, "the node's directory is an absolute path of letters, digits and . _ - /",
                       "nodeDir")


VERB_MIGRATION = "migration"  # virtbus.nodeapi.<node>.migration


class MigrationReportReply(Message, frozen=True):
    phase: MigrationPhase  # the migration's phase after the report (Failed: it had failed before)


class MigrationReport(Message, frozen=True):
    """What a node says of an instance's migration (``virtbus.nodeapi.<node>.migration``): the target
    that it is ready (where, and the instance's NICs there), the source that it moves the guest, and
    either that it is over."""

    vmi: str
    uid: str
    migration_uid: str
    phase: MigrationPhase
    reason: str = ""
    port: int | None = None  # TargetReady: where its launcher listens, on its node's address
    node_dir: str | None = None
    interfaces: list[VMIInterface] = []


# who says which phase: the target that it is ready, the source that it moves and that it is done
# (the target says Succeeded too, as its libvirtd resumes the guest there: the move is known even if the
# source ends before it says so)
SAID_BY_TARGET = frozenset({MigrationPhase.TARGET_READY, MigrationPhase.SUCCEEDED, MigrationPhase.FAILED})
SAID_BY_SOURCE = frozenset({MigrationPhase.RUNNING, MigrationPhase.SUCCEEDED, MigrationPhase.FAILED})
# the phase each report moves on from
_AFTER = {MigrationPhase.TARGET_READY: (MigrationPhase.SCHEDULED,),
          MigrationPhase.RUNNING: (MigrationPhase.TARGET_READY,),
          MigrationPhase.SUCCEEDED: (MigrationPhase.RUNNING,)}


def apply_report(vmi: VMI, report: MigrationReport, node: str, node_address: str | None, now: float) -> VMI | None:
    """Pure: the instance after a node's word on its migration; None when it changes nothing (the
    migration is over, or this is a repeat). Raises ApiError for what that node may not say: only the
    target says it is ready, only the source moves the guest, and only of the migration under way."""
    state = vmi.migration_state
    if vmi.uid != report.uid or state is None or state.migration_uid != report.migration_uid:
        # not Conflict (a lost race, tried again): a word on a migration that is not the instance's now
        # never lands, and a launcher that waits out retries would hold up the next one
        raise ApiError(Code.NOT_FOUND, f"VMI {vmi.name} has no migration {report.migration_uid} under way")
    if len(report.reason) > MAX_REASON or not report.reason.isprintable():
        raise ApiError(Code.INVALID, f"reason must be printable text of at most {MAX_REASON} characters", "reason")
    source, target = node == state.source_node, node == state.target_node
    if not (source and report.phase in SAID_BY_SOURCE) and not (target and report.phase in SAID_BY_TARGET):
        role = "the source" if source else "the target" if target else "neither source nor target"
        raise ApiError(Code.FORBIDDEN, f"node {node} is {role} of VMI {vmi.name}'s migration and may not say "
                                       f"{report.phase.value}", "phase")
    if state.final or vmi.phase is not Phase.RUNNING or report.phase is state.phase:
        return None  # over (the instance with it; moved, it is bound to the target), or said already
    if source and vmi.node_name != node:
        raise ApiError(Code.FORBIDDEN, f"VMI {vmi.name} is not bound to node {node}", "phase")
    changes: dict[str, Any] = {}
    if report.phase is MigrationPhase.FAILED:
        new = _replace(state, phase=MigrationPhase.FAILED, reason=report.reason or "the migration failed",
                       end_timestamp=now, target=None)
        return _replace(vmi, migration_state=new)
    if state.phase not in _AFTER[report.phase]:
        raise ApiError(Code.INVALID, f"VMI {vmi.name}'s migration is {state.phase.value}, not ready for "
                                      f"{report.phase.value}", "phase")
    if report.phase is MigrationPhase.TARGET_READY:
        if report.port is None or report.node_dir is None or node_address is None:
            raise ApiError(Code.INVALID, "a ready target says its port and directory, from a node with an address",
                           "port")
        check_target(report.port, report.node_dir)
        names = {i.name for i in vmi.spec.interfaces}
        for i, nic in enumerate(report.interfaces):
            netcheck.interface_status(nic.name, nic.ip_address, nic.ip_addresses, nic.mac, f"interfaces[{i}]")
            if nic.name not in names:
                raise ApiError(Code.INVALID, f"the VMI has no interface {nic.name!r}", f"interfaces[{i}].name")
        ready = MigrationTarget(address=node_address, port=report.port, node_dir=report.node_dir,
                                interfaces=report.interfaces)
        return _replace(vmi, migration_state=_replace(state, phase=MigrationPhase.TARGET_READY, target=ready))
    if report.phase is MigrationPhase.RUNNING:
        return _replace(vmi, migration_state=_replace(state, phase=MigrationPhase.RUNNING))
    # Succeeded: the guest runs on the target; the instance is bound there, with its NICs there
    assert state.target is not None and state.target_node is not None  # TargetReady came first
    changes["node_name"] = state.target_node
    if state.target.interfaces:
        changes["interfaces"] = state.target.interfaces
    changes["migration_state"] = _replace(state, phase=MigrationPhase.SUCCEEDED, end_timestamp=now, target=None,
                                          reason="")
    return _replace(vmi, **changes)


def event_of(vmi: VMI, said: MigrationPhase) -> tuple[str, str, bool] | None:
    """Pure: the VMI's event (reason, message, warning) once a node's report moved its migration on."""
    state = vmi.migration_state
    if state is None:
        return None
    if said is MigrationPhase.SUCCEEDED:
        return "Migrated", f"The VirtualMachineInstance migrated to node {vmi.node_name}.", False
    if said is MigrationPhase.FAILED:
        return "MigrationFailed", f"migration {state.migration_name} failed: {state.reason}", True
    if said is MigrationPhase.RUNNING:
        return "Migrating", f"migrating to node {state.target_node} ({state.migration_name})", False
    return None
