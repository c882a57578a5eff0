"""What a node tells the control plane (``virtbus.nodeapi.<node>.<verb>``), and the pure rules the
control plane applies before it writes anything (Kubernetes' NodeRestriction).

NATS lets only node N publish on ``virtbus.nodeapi.N.*`` (proto.permissions), so the subject names
the caller; the rules below make sure N changes nothing but the status of the VMIs bound to N.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from proto import netcheck
from proto.api import Message
from proto.errors import ApiError, Code
from proto.state import FINAL_PHASES, VMI, Condition, Phase, VMIInterface, VolumeStatus
from proto.subjects import is_dns1123_label

VERB_REGISTER = "register"
VERB_STATUS = "status"
VERB_ATTACH = "attach"

# What a node may say of a VMI bound to it: that it runs, or how it ended.
REPORTABLE_PHASES = frozenset({Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED})
# ...and the conditions only it can see. KubeVirt's "Paused": the phase stays Running while the
# guest is paused (by a user, or by the hypervisor on an I/O error such as a full disk).
CONDITION_PAUSED = "Paused"
# virtbus's own: True while the launcher's private libvirtd is gone (it restarts it, as KubeVirt's
# virt-launcher restarts virtqemud), False with the story once it is back.
CONDITION_LIBVIRTD_LOST = "LibvirtdLost"
# KubeVirt's "Synchronized": False with the error while the node's handler fails to carry out what
# the instance needs, True again once it has.
CONDITION_SYNCHRONIZED = "Synchronized"
REPORTABLE_CONDITIONS = frozenset({CONDITION_PAUSED, CONDITION_LIBVIRTD_LOST, CONDITION_SYNCHRONIZED})
# KubeVirt's "Ready", which the control plane sets with the phase; a node says it only of a Running
# instance with a readinessProbe, whose probes it runs (handler.probes). Until then such an instance
# is Running and not Ready.
CONDITION_READY = "Ready"
WAITING_FOR_PROBE = "ReadinessProbe"
SAID_BY_NODES = REPORTABLE_CONDITIONS | {CONDITION_READY}
CONDITION_STATUSES = frozenset({"True", "False", "Unknown"})


class Registration(Message, frozen=True):
    """A node's own description; the control plane adds its pod CIDR."""

    cpus: int
    memory: int
    kvm: bool
    labels: dict[str, str] = {}
    address: str | None = None
    allowed_bridges: list[str] = []  # host bridges secondary networks may use here (--allowed-bridge)
    ovs_bridges: list[str] = []  # Open vSwitch bridges here (ovs-vsctl list-br on --ovs-db)
    vlan_access_ports: bool = False  # this kernel loads servicekit.vlanports' programs
    free_disk: int | None = None


class EventNote(Message, frozen=True):
    reason: str
    message: str
    warning: bool = False


class NodeCondition(Message, frozen=True):
    """A condition as a node reports it; the control plane stamps its transition time."""

    type: str
    status: str
    reason: str = ""
    message: str = ""


class StatusReport(Message, frozen=True):
    vmi: str
    uid: str
    phase: Phase | None = None
    reason: str = ""
    interfaces: list[VMIInterface] | None = None
    event: EventNote | None = None
    conditions: list[NodeCondition] | None = None  # each replaces the VMI's condition of its type
    torn_down: bool = False  # the instance is final and the node has removed all it held for it
    launcher_started_at: float | None = None  # the launch's stages (VMI.launcher_started_at), with Running
    launcher_ready_at: float | None = None
    volume_status: list[VolumeStatus] | None = None  # the instance's volumes, all of them (VMI.volume_status)


class StatusReply(Message, frozen=True):
    applied: bool
    phase: Phase


class AttachRequest(Message, frozen=True):
    vmi: str
    uid: str


class SecondaryNic(Message, frozen=True):
    interface: str
    network: str
    bridge: str
    address: str  # with its prefix, e.g. 192.168.100.5/24; "" on a layer-2 network (the segment's DHCP)
    type: str = "bridge"  # bridge (a Linux bridge) or ovs (an Open vSwitch bridge)
    vlan: int | None = None


class AttachReply(Message, frozen=True):
    items: list[SecondaryNic]


def running_ready(vmi: VMI, now: float, reason: str = "") -> Condition:
    """The Ready of an instance as it starts, or goes back to, running: True; with a readinessProbe,
    False until its node's probe says otherwise (handler.probes)."""
    if vmi.spec.readiness_probe is None:
        return Condition(type=CONDITION_READY, status="True", reason=reason, last_transition_time=now)
    return Condition(type=CONDITION_READY, status="False", reason=WAITING_FOR_PROBE,
                     message="its readiness probe has not passed yet", last_transition_time=now)


def check_bound(vmi: VMI, node: str, uid: str) -> None:
    """Raises unless ``node`` runs this very instance."""
    if vmi.node_name != node:
        raise ApiError(Code.FORBIDDEN, f"VMI {vmi.name} is not bound to node {node}")
    if vmi.uid != uid:
        raise ApiError(Code.CONFLICT, f"VMI {vmi.name} is now instance {vmi.uid}, not {uid}")


MAX_REASON = 1024
MAX_TIMESTAMP = 4102444800.0  # 2100-01-01: a launch time beyond it is no clock reading


def tidy(text: str) -> str:
    """A reason a node may send: control characters (a libvirt error's newlines) become spaces,
    and it is cut to MAX_REASON."""
    return "".join(c if c.isprintable() else " " for c in text)[:MAX_REASON]


def check_report(report: StatusReport) -> None:
    """What a node says is shown to people and read by other nodes (addresses become nft rules):
    printable text of sane length, real addresses, interface names the spec has."""
    texts = [("reason", report.reason)]
    if report.event is not None:
        texts += [("event.reason", report.event.reason), ("event.message", report.event.message)]
    for i, cond in enumerate(report.conditions or []):
        where = f"conditions[{i}]"
        if cond.type not in SAID_BY_NODES:
            raise ApiError(Code.INVALID, f"a node reports only {sorted(SAID_BY_NODES)} conditions, "
                                         f"not {cond.type[:64]!r}", f"{where}.type")
        if cond.status not in CONDITION_STATUSES:
            raise ApiError(Code.INVALID, "a condition's status is True, False or Unknown", f"{where}.status")
        if [c.type for c in report.conditions or []].count(cond.type) > 1:
            raise ApiError(Code.INVALID, f"condition {cond.type} given twice", f"{where}.type")
        texts += [(f"{where}.reason", cond.reason), (f"{where}.message", cond.message)]
    for field, text in texts:
        if len(text) > MAX_REASON or not text.isprintable():
            raise ApiError(Code.INVALID, f"{field} must be printable text of at most {MAX_REASON} characters", field)
    for i, nic in enumerate(report.interfaces or []):  # checked as the VMI they go into will be
        netcheck.interface_status(nic.name, nic.ip_address, nic.ip_addresses, nic.mac, f"interfaces[{i}]")
    check_volume_status(report.volume_status or [])
    for field, at in (("launcher_started_at", report.launcher_started_at),
                      ("launcher_ready_at", report.launcher_ready_at)):
        if at is not None and not 0 < at < MAX_TIMESTAMP:
            raise ApiError(Code.INVALID, f"{field} must be a time in seconds since the epoch", field)


MAX_VOLUME_STATUS = 32  # a VM's 16 volumes, and as many being detached
_TARGET = re.compile(r"^(vd|sd)[a-z]{1,2}$")  # libvirt's disk targets, as launcher.domain names them


def check_volume_status(entries: list[VolumeStatus]) -> None:
    """A node's word on an instance's volumes is printed for people: names and targets of their shape,
    printable text. A name need not be in the spec: a volume being removed is said until it is gone."""
    if len(entries) > MAX_VOLUME_STATUS:
        raise ApiError(Code.INVALID, f"at most {MAX_VOLUME_STATUS} volumes are reported", "volume_status")
    for i, entry in enumerate(entries):
        where = f"volume_status[{i}]"
        if not is_dns1123_label(entry.name):
            raise ApiError(Code.INVALID, "a volume's name is a DNS label", f"{where}.name")
        if entry.target and not _TARGET.match(entry.target):
            raise ApiError(Code.INVALID, f"{entry.target[:16]!r} is not a disk target (vda, sdb)", f"{where}.target")
        for field, text in (("reason", entry.reason), ("message", entry.message)):
            if len(text) > MAX_REASON or not text.isprintable():
                raise ApiError(Code.INVALID, f"{field} must be printable text of at most {MAX_REASON} characters",
                               f"{where}.{field}")
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ApiError(Code.INVALID, "a volume is reported once", "volume_status")


def apply_report(vmi: VMI, report: StatusReport, node: str, now: float) -> VMI | None:
    """Pure: the VMI after the node's report, None when it changes nothing (an instance that has
    already finished keeps its end); raises ApiError for what the node may not say."""
    check_bound(vmi, node, report.uid)
    check_report(report)
    probed = [i for i, c in enumerate(report.conditions or []) if c.type == CONDITION_READY]
    if probed and vmi.spec.readiness_probe is None:
        raise ApiError(Code.INVALID, f"VMI {vmi.name} has no readinessProbe: its Ready follows its phase",
                       f"conditions[{probed[0]}].type")
    if report.interfaces is not None:
        names = {i.name for i in vmi.spec.interfaces}
        for i, nic in enumerate(report.interfaces):
            if nic.name not in names:
                raise ApiError(Code.INVALID, f"the VMI has no interface {nic.name!r}", f"interfaces[{i}].name")
    if report.phase is not None and report.phase not in REPORTABLE_PHASES:
        raise ApiError(Code.INVALID, f"a node reports Running, Succeeded or Failed, not {report.phase.value}",
                       "phase")
    if report.torn_down and report.phase not in FINAL_PHASES and vmi.phase not in FINAL_PHASES:
        raise ApiError(Code.INVALID, "an instance is torn down only once it has finished", "torn_down")
    if vmi.phase in FINAL_PHASES:
        # It keeps its end; all a node may still say is that it has cleaned up after it.
        return msgspec.structs.replace(vmi, torn_down=True) if report.torn_down and not vmi.torn_down else None
    changes: dict[str, Any] = {}
    if report.torn_down:
        changes["torn_down"] = True
    if report.interfaces is not None:
        changes["interfaces"] = report.interfaces
    if report.reason:
        changes["reason"] = report.reason
    if report.launcher_started_at is not None:
        changes["launcher_started_at"] = report.launcher_started_at
    if report.launcher_ready_at is not None:
        changes["launcher_ready_at"] = report.launcher_ready_at
    if report.volume_status is not None:
        changes["volume_status"] = report.volume_status
    phase = report.phase
    if phase is not None and vmi.phase is Phase.UNKNOWN:
        # The node is heard again: what it says replaces the phase its silence suspended.
        changes["phase_before_unknown"] = None
    if phase is not None and phase is not vmi.phase:
        changes["phase"] = phase
        ready = [c for c in vmi.conditions if c.type != "Ready"]
        if phase is Phase.RUNNING:
            # back from Unknown, the guest ran all along: it keeps the time it started
            changes["started_at"] = vmi.started_at if vmi.phase is Phase.UNKNOWN and vmi.started_at else now
            changes["conditions"] = [*ready, running_ready(vmi, now)]
        else:
            changes["finished_at"] = now
            changes["conditions"] = [*ready, Condition(type="Ready", status="False", reason=phase.value,
                                                       last_transition_time=now)]
    said = [c for c in report.conditions or [] if c.type != CONDITION_READY or (phase or vmi.phase) is Phase.RUNNING]
    conditions = _with_reported(changes.get("conditions", vmi.conditions), said, now)  # a probe's, while it runs
    if phase in FINAL_PHASES:  # a guest that ended is not paused any more
        conditions = [c for c in conditions if c.type not in REPORTABLE_CONDITIONS]
    if conditions != vmi.conditions:
        changes["conditions"] = conditions
    new = msgspec.structs.replace(vmi, **changes)
    return None if new == vmi else new


def _with_reported(current: list[Condition], reported: list[NodeCondition], now: float) -> list[Condition]:
    """The conditions with the node's replacing theirs; a condition's transition time moves only
    when its status does, as in Kubernetes."""
    out = list(current)
    for cond in reported:
        old = next((c for c in out if c.type == cond.type), None)
        since = old.last_transition_time if old is not None and old.status == cond.status else now
        new = Condition(type=cond.type, status=cond.status, reason=cond.reason, message=cond.message,
                        last_transition_time=since)
        out = [*(c for c in out if c.type != cond.type), new] if old != new else out
    return out
