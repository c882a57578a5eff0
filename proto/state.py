"""What lives in the JetStream KV buckets: VMs, their instances, nodes."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from proto.spec import RunStrategy, Taint, VMSpec


class Phase(enum.StrEnum):
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


FINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class State(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False):
    """Base of stored state: immutable; every change is a new value written by compare-and-set. Not
    tracked by the cycle collector: a record is a tree of values, never part of a cycle. With 10,000
    VMIs' node copies cached, decoding one more took 25 us with the collector on and 3 us with it off:
    its collections walked every record; 15 us now (their lists and dicts are still tracked)."""


class Condition(State, frozen=True):
    type: str
    status: str  # "True" | "False" | "Unknown", as in Kubernetes
    reason: str = ""
    message: str = ""
    last_transition_time: float = 0.0


class VM(State, frozen=True):
    spec: VMSpec
    created_at: float
    generation: int = 1
    # virtctl-style requests the controller acts on: a one-off start (runStrategy Manual) and a
    # restart of the instance with this uid.
    start_requested: bool = False
    restart_of: str | None = None
    # virtctl start --paused: the next instance starts paused (as startStrategy: Paused does for every
    # one); cleared once that instance is made
    start_paused: bool = False
    # CrashLoopBackOff: failed runs in a row, and when the next run may start.
    failures: int = 0
    next_start_at: float = 0.0
    last_failure: str = ""
    owner: str | None = None  # the VirtualMachinePool that made it (proto.workloads); deleted with it


class VMIInterface(State, frozen=True):
    name: str
    ip_address: str | None = None
    ip_addresses: list[str] = []
    mac: str | None = None


# --- live migration (proto.migrations) ----------------------------------------------------------
class MigrationPhase(enum.StrEnum):
    """KubeVirt's VirtualMachineInstanceMigrationPhase, the ones virtbus goes through."""

    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    TARGET_READY = "TargetReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINAL_MIGRATION_PHASES = frozenset({MigrationPhase.SUCCEEDED, MigrationPhase.FAILED})


class MigrationTarget(State, frozen=True):
    """Where the target's launcher waits for the source's connections; written only while the
    migration runs. Not the token each connection starts with: every viewer reads this record, and the
    token is the key to that launcher's libvirtd (proto.migrationtoken)."""

    address: str  # the target node's address, from its registration
    port: int
    node_dir: str  # where the target node keeps its VMIs: the domain's paths there
    interfaces: list[VMIInterface] = []  # the instance's NICs as they will be there (its new pod IP)


class MigrationOptions(State, frozen=True):
    """The cluster's migration settings a migration runs with, fixed as it starts (KubeVirt's
    status.migrationState.migrationConfiguration; the KubeVirt CR's spec.configuration.migrations)."""

    bandwidth_per_migration: int = 0  # bytes a second; 0: no limit
    completion_timeout_per_gib: int = 150  # seconds per GiB to move before it is aborted
    progress_timeout: int = 150  # seconds without progress before it is aborted
    allow_auto_converge: bool = False  # QEMU slows the guest's vCPUs down when its memory changes too fast
    disable_tls: bool = False  # the launchers' connections in the clear (launcher.migrationtls)


class MigrationState(State, frozen=True):
    """An instance's migration, the running one or the last (KubeVirt's status.migrationState)."""

    migration_uid: str
    migration_name: str
    source_node: str
    phase: MigrationPhase
    start_timestamp: float
    target_node: str | None = None
    target: MigrationTarget | None = None
    end_timestamp: float | None = None
    abort_requested: bool = False  # the migration was deleted (virtbus migrate-cancel): its source aborts it
    reason: str = ""
    options: MigrationOptions = MigrationOptions()  # an older record's: KubeVirt's defaults
    policy: str = ""  # the MigrationPolicy whose settings it took (proto.migrationpolicies), if one

    @property
    def final(self) -> bool:
        return self.phase in FINAL_MIGRATION_PHASES


class HotplugPhase(enum.StrEnum):
    """Where a hotplugged volume of a running instance is (KubeVirt's VolumePhase, the ones virtbus
    passes through)."""

    PENDING = "Pending"  # not attached yet: its file on its way (its node populating it), or the attach failed
    READY = "Ready"  # attached: the guest has the disk
    DETACHING = "Detaching"  # removed from the spec; the guest still has the disk


class VolumeStatus(State, frozen=True):
    """One volume of a running instance as its launcher says it (KubeVirt's status.volumeStatus): the
    disk the guest has it as and, for a hotplugged volume, where its attachment stands."""

    name: str
    target: str = ""  # the domain's target (vda, sda); "" while not attached
    phase: HotplugPhase | None = None  # hotplugged volumes only, as KubeVirt says it
    reason: str = ""
    message: str = ""
    hotplug: bool = False


class VMI(State, frozen=True):
    """One run of a VM. Its spec is frozen at creation, like a KubeVirt VMI's, but for its hotpluggable
    volumes (proto.hotplug), which ``addvolume`` and ``removevolume`` change while it runs."""

    name: str
    uid: str
    spec: VMSpec
    created_at: float
    phase: Phase = Phase.PENDING
    node_name: str | None = None
    conditions: list[Condition] = []
    reason: str = ""
    stop_requested: bool = False
    # the grace a stop asked for (virtctl stop --force --grace-period N) when shorter than the spec's
    # terminationGracePeriodSeconds: the seconds the guest has to power off before it is destroyed
    stop_grace_period: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    interfaces: list[VMIInterface] = []
    launcher_pid: int | None = None
    guest_os_ready: bool = False
    # While Unknown (its node stopped reporting): the phase it had, to return to once the node is
    # heard again; a report from the node replaces it with what the node says.
    phase_before_unknown: Phase | None = None
    # Its node has ended the launcher and removed what the run held (pod netns, files): set by
    # the node once the instance is final. Until then the record stays, as a KubeVirt VMI's
    # finalizer keeps it, so "delete --wait" returns only when nothing of the run is left.
    torn_down: bool = False
    # High availability (proto.fencing): its launcher's lease lapsed, so the launcher has killed
    # its QEMU; the record may go without its node's word, and the VM runs again elsewhere.
    fenced: bool = False
    # A VirtualMachineInstance made on its own (kind VirtualMachineInstance), not by a VM: it runs
    # once, stays when it ends, and goes when deleted (``deleting``: stopped, then removed).
    standalone: bool = False
    deleting: bool = False
    # virtctl pause/unpause/soft-reboot, as desired state its launcher carries out (launcher.power):
    # whether the guest is to be paused; a count bumped by every pause and unpause asked, so the
    # launcher acts once on each (an unpause also resumes a guest the hypervisor paused); and the
    # soft reboots asked so far, the launcher doing one for each it has not yet seen.
    pause_requested: bool = False
    pause_generation: int = 0
    reboot_requests: int = 0
    # The VirtualMachineInstanceReplicaSet that made it (proto.workloads); such an instance is standalone
    owner: str | None = None
    # When its launcher's process began and when that launcher had connected and read its instance
    # (wall clock, as its node said with Running): the launch's stages, for bench/lane.py
    launcher_started_at: float | None = None
    launcher_ready_at: float | None = None
    # Stopped to empty its node (virtbus drain, kubectl drain's eviction): not the guest's doing nor its
    # owner's wish, so a VM that wants it running (Always, RerunOnFailure) runs it again elsewhere, and
    # its end counts as no failure.
    evicted: bool = False
    # Its priority (proto.priorities), decided from its spec's priorityClassName when it was bound and
    # kept, as Kubernetes keeps a pod's (pod.spec.priority); None: 0 (so a cluster without priorities
    # stores no byte more), or not bound yet
    priority: int | None = None
    # Its live migration under way, or the last one (proto.migrations; KubeVirt's status.migrationState)
    migration_state: MigrationState | None = None
    # Its volumes as its launcher last said (KubeVirt's status.volumeStatus): targets, hotplug progress
    volume_status: list[VolumeStatus] = []


def is_ready(vmi: VMI) -> bool:
    """KubeVirt's READY: Running, and for an instance with a readinessProbe, its probe passing (its
    node has said Ready, proto.probes)."""
    if vmi.phase is not Phase.RUNNING:
        return False
    return vmi.spec.readiness_probe is None or any(c.type == "Ready" and c.status == "True" for c in vmi.conditions)


def as_started(spec: VMSpec, paused: bool = False) -> dict[str, Any]:
    """What a new instance of ``spec`` asks of its launcher from its creation, as VMI fields: KubeVirt's
    startStrategy: Paused (or paused: this start's, virtctl start --paused) is a pause asked before
    the guest first runs (unpause resumes it)."""
    return {"pause_requested": True, "pause_generation": 1} if spec.start_paused or paused else {}


class Node(State, frozen=True):
    name: str
    cpus: int
    memory: int  # bytes the node offers to guests
    kvm: bool  # whether KVM really runs a guest here; else guests run under TCG
    heartbeat: float
    started_at: float
    labels: dict[str, str] = {}
    address: str | None = None
    pod_cidr: str | None = None
    # host bridges the node's operator lets secondary networks use (handler --allowed-bridge)
    allowed_bridges: list[str] = []
    ovs_bridges: list[str] = []  # the Open vSwitch bridges on the node (ovs NADs), as its handler found them
    vlan_access_ports: bool = False  # its kernel runs servicekit.vlanports' programs: bridge NADs with a vlan
    free_disk: int | None = None  # bytes free where the node keeps its VMIs' disks, at the last heartbeat
    # Kubernetes' spec.unschedulable (kubectl cordon): nothing new is bound here; what runs stays. Set by
    # an admin (virtbus cordon|drain), kept through the node's registrations, cleared by uncordon.
    unschedulable: bool = False
    # labels an admin gave it (virtbus label node, kubectl's), kept through its registrations and
    # already in ``labels``, which are its handler's (--label, kubernetes.io/hostname) with these over them
    admin_labels: dict[str, str] = {}
    taints: list[Taint] = []  # an admin's (virtbus taint node, kubectl's), kept through its registrations


class Exposure(State, frozen=True):
    """A node port: traffic to any node address on node_port goes to the VM's pod IP on port; or, with
    ``service`` (and no vm), a NodePort Service's claim of it, so the two never share a node port."""

    vm: str
    port: int
    node_port: int
    protocol: str = "TCP"
    created_at: float = 0.0
    service: str | None = None

    @property
    def key(self) -> str:
        return exposure_key(self.protocol, self.node_port)


class Lease(State, frozen=True):
    """Who leads the control plane's controllers. Expiry is judged by each reader on its own monotonic
    clock (the revision unchanged for ``duration`` seconds), never by comparing wall clocks."""

    holder: str
    duration: float
    acquired_at: float = 0.0  # wall clock, for people only


class VolumePhase(enum.StrEnum):
    """KubeVirt's DataVolume phases, the few virtbus has (proto.snapshots)."""

    PENDING = "Pending"  # no node yet, or its node has not started on it
    POPULATING = "Populating"  # its node is writing its first content (blank, an image, a snapshot)
    READY = "Ready"
    FAILED = "Failed"


class Progress(State, frozen=True):
    done: int = 0
    total: int = 0


class PersistentVolume(State, frozen=True):
    """A virtbus volume: one qcow2 file on one node that outlives every run of the VMs using it
    (KubeVirt's PVC and DataVolume). ``node`` is set when it is created with --node, or by the
    binder when the first VMI using it is bound (Kubernetes' WaitForFirstConsumer); from then on
    every VMI using it goes to that node."""

    name: str
    uid: str  # in its file's name: a volume deleted and made again never finds the old one's bytes
    size: str
    created_at: float
    image: str | None = None  # its first content, from the image store; None: blank
    node: str | None = None
    owner_vm: str | None = None  # made by this VM's dataVolumeTemplates, and deleted with it
    snapshot: str | None = None  # its first content is this snapshot's (volume restore); else image or blank
    # Populated by its node's handler once it has a node (proto.snapshots); a VMI using it waits for Ready.
    phase: VolumePhase = VolumePhase.PENDING
    progress: Progress = Progress()
    reason: str = ""
    # A VM restore swaps in a new uid (a new file); the old file is kept until the new one is Ready.
    previous_uid: str | None = None


class VmiLease(State, frozen=True):
    """A high-availability VMI's lease, renewed by its launcher (proto.fencing). Key <node>.<vmi>.
    Like the leader's lease, it is judged by its revision changing, never by a wall clock."""

    uid: str
    renewals: int = 0


# How often a node renews its lease. As a kubelet renews its Lease every 10 s and is NotReady after
# 40 s unrenewed: the control plane's thresholds (scheduler.nodelife) let three renewals go missing.
# At a thousand nodes a renewal every 2 s was 500 JetStream writes a second, and 60 of a node's 84
# messages a minute when nothing else happens.
NODE_LEASE_RENEW_S = 5.0


class NodeLease(State, frozen=True):
    """A node's heartbeat (BUCKET_NODE_LEASES, key: the node), renewed every NODE_LEASE_RENEW_S. The
    control plane judges it by its changing, on its own clock (scheduler.nodelife); the time is the
    node's, shown to people."""

    renewed_at: float


def exposure_key(protocol: str, node_port: int) -> str:
    return f"nodeport-{protocol.lower()}-{node_port}"


class FloatingIP(State, frozen=True):
    """A provider-network address mapped 1:1 to a VM (DNAT in, SNAT out) on whichever node runs it."""

    address: str
    network: str
    vm: str | None = None
    # or a LoadBalancer Service's address, answered by a node that runs one of its endpoints
    service: str | None = None

    @property
    def key(self) -> str:
        return floating_ip_key(self.address)


def floating_ip_key(address: str) -> str:
    return "fip-" + address.replace(".", "-")


# --- Kubernetes Services and Endpoints (proto.services reads their manifests) ---------------------
HEADLESS = "None"  # a Service's clusterIP when it has none: DNS only


class ServiceType(enum.StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ServicePort(State, frozen=True):
    port: int
    target_port: int
    protocol: str = "TCP"
    name: str = ""
    node_port: int | None = None  # NodePort and LoadBalancer Services: claimed like a VM's node port


class Service(State, frozen=True):
    name: str
    uid: str
    type: ServiceType
    ports: list[ServicePort]
    created_at: float
    selector: dict[str, str] = {}  # empty: its Endpoints are written by hand
    cluster_ip: str = HEADLESS  # HEADLESS: DNS only, no virtual IP
    labels: dict[str, str] = {}
    # LoadBalancer: the floating IP it holds (status.loadBalancer.ingress), or asks for before it does
    load_balancer_ip: str | None = None
    external_ips: list[str] = []  # spec.externalIPs: addresses routed to the nodes it answers on too

    @property
    def headless(self) -> bool:
        return self.cluster_ip == HEADLESS


class EndpointAddress(State, frozen=True):
    ip: str
    vmi: str | None = None  # the VMI it belongs to (targetRef); None for a hand-written address
    node: str | None = None
    hostname: str | None = None


class EndpointPort(State, frozen=True):
    port: int
    protocol: str = "TCP"
    name: str = ""


class EndpointSubset(State, frozen=True):
    addresses: list[EndpointAddress] = []
    ports: list[EndpointPort] = []


class Endpoints(State, frozen=True):
    """Where a Service's traffic goes: kept by the endpoints controller for a Service with a selector,
    written by hand (``manual``) for one without, as Kubernetes has it."""

    name: str
    subsets: list[EndpointSubset] = []
    manual: bool = False


# What a VM's spec holds for the VM object itself, not for its instances: a change of these (its run
# strategy, its own labels, the high-availability annotation, its dataVolumeTemplates, which are made
# once) reaches the running instance without a restart, or is none of its business.
VM_ONLY_FIELDS = ("run_strategy", "vm_labels", "high_availability", "data_volume_templates")
RESTART_REQUIRED = "RestartRequired"
RESTART_REQUIRED_MESSAGE = "a non-live-updatable field was changed in the template spec"  # KubeVirt's words


def restart_required(spec: VMSpec, vmi: VMI | None) -> bool:
    """Pure: whether the VM's instance runs a spec the VM no longer has (KubeVirt's RestartRequired
    condition): an instance's spec is frozen when it is made, and only a restart brings the change."""
    if vmi is None or vmi.phase in FINAL_PHASES or vmi.stop_requested or spec.run_strategy is RunStrategy.HALTED:
        return False  # no instance goes on running with the old spec: the next start takes the new one
    kept = {field: getattr(spec, field) for field in VM_ONLY_FIELDS}
    return msgspec.structs.replace(vmi.spec, **kept) != spec


def grace_period(vmi: VMI) -> int:
    """Pure: the seconds its guest has to power off once asked to stop, before it is destroyed."""
    spec = vmi.spec.termination_grace_period_seconds
    return spec if vmi.stop_grace_period is None else min(spec, vmi.stop_grace_period)
