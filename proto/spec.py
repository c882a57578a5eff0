"""The VM spec: virtbus's native form, a KubeVirt-compatible subset (see proto.kubevirt).

Field names serialize in camelCase, like KubeVirt's, so stored state reads familiar.
Quantities stay strings as the user wrote them; proto.quantity turns them into bytes.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from proto.labels import LabelSelector, Requirement


class RunStrategy(enum.StrEnum):
    """KubeVirt's run strategies; ``running: true|false`` is Always|Halted."""

    ALWAYS = "Always"  # an instance always runs: one that ends is replaced
    RERUN_ON_FAILURE = "RerunOnFailure"  # one that fails is replaced; one that succeeds stays stopped
    ONCE = "Once"  # one instance runs to its end, failed or not, and is not replaced
    MANUAL = "Manual"  # runs only when started, stops only when stopped
    HALTED = "Halted"


class Spec(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True,
           gc=False):
    """Base of every spec struct: immutable, keyword-only, camelCase, strict. A field at its default is
    left out when encoded, as kubectl's JSON leaves out empty fields, and a reader fills it back in: a
    VMI record of the testvmi example is 478 bytes instead of 993, and every stored spec, node copy and
    reply is that much shorter (older records, with every field, read the same). Not tracked by Python's
    cycle collector (gc=False): a spec is a tree of values and never part of a cycle, and a process
    holding thousands (the binder, a node's copies) otherwise spent most of each decode in collections
    that walk them all (proto.state.State says the same)."""


class Cpu(Spec, frozen=True):
    cores: int = 1
    sockets: int = 1
    threads: int = 1


class Disk(Spec, frozen=True):
    """A disk device; its volume has the same name. A cdrom is read-only media on sata or scsi
    (KubeVirt's ``cdrom:``); a disk may be read-only too."""

    name: str
    bus: Literal["virtio", "sata", "scsi"] = "virtio"
    boot_order: int | None = None
    device: Literal["disk", "cdrom"] = "disk"
    readonly: bool = False
    serial: str | None = None  # what the guest reads as the disk's serial number (/sys/block/vda/serial)
    cache: Literal["none", "writethrough", "writeback"] | None = None  # None: QEMU's own (writeback)
    io: Literal["native", "threads"] | None = None


class Port(Spec, frozen=True):
    port: int
    protocol: Literal["TCP", "UDP"] = "TCP"
    name: str | None = None


class Interface(Spec, frozen=True):
    """A NIC; its network has the same name."""

    name: str
    binding: Literal["masquerade", "bridge"]
    mac_address: str | None = None
    ports: list[Port] = []
    model: Literal["virtio", "e1000"] = "virtio"


class Input(Spec, frozen=True):
    """A pointing device (KubeVirt's ``inputs``): a tablet, so a VNC pointer lands where it is seen."""

    name: str
    type: Literal["tablet"] = "tablet"
    bus: Literal["virtio", "usb"] = "usb"


class Network(Spec, frozen=True):
    name: str
    kind: Literal["pod", "multus"] = "pod"
    network_name: str | None = None  # the NetworkAttachmentDefinition, for multus


class ContainerDisk(Spec, tag="containerDisk", tag_field="type", frozen=True):
    image: str


class EmptyDisk(Spec, tag="emptyDisk", tag_field="type", frozen=True):
    capacity: str


class CloudInitNoCloud(Spec, tag="cloudInitNoCloud", tag_field="type", frozen=True):
    user_data: str = ""
    network_data: str | None = None


class PersistentVolumeClaim(Spec, tag="persistentVolumeClaim", tag_field="type", frozen=True):
    """A virtbus volume (``virtbus volume``; KubeVirt's PVC or DataVolume): a disk that outlives runs.
    A hotpluggable one (KubeVirt's ``hotpluggable: true``, what ``virtbus addvolume`` adds) may be
    attached to and removed from a running instance (proto.hotplug); its disk is on the scsi bus."""

    claim_name: str
    hotpluggable: bool = False


class CloudInitConfigDrive(Spec, tag="cloudInitConfigDrive", tag_field="type", frozen=True):
    """cloud-init's OpenStack config drive: a "config-2" ISO."""

    user_data: str = ""
    network_data: str | None = None


class HostDisk(Spec, tag="hostDisk", tag_field="type", frozen=True):
    """A raw file of the node's, under a directory its operator allowed (handler --host-disk-dir);
    the file is the operator's and outlives the VM."""

    path: str
    kind: Literal["Disk", "DiskOrCreate"] = "Disk"  # KubeVirt's ``type``: must exist, or made if missing
    capacity: str | None = None  # the size of a file DiskOrCreate makes


class Ephemeral(Spec, tag="ephemeral", tag_field="type", frozen=True):
    """A copy-on-write overlay on a virtbus volume, discarded with the run: the volume is never written."""

    claim_name: str


VolumeSource = ContainerDisk | EmptyDisk | CloudInitNoCloud | PersistentVolumeClaim | CloudInitConfigDrive | HostDisk \
    | Ephemeral


def claims(volumes: list[Volume]) -> list[tuple[int, str]]:
    """(index, volume name) of every virtbus volume among a VM's volumes, an ephemeral's too: it
    must exist, and holds the VM to the volume's node like a claim of it."""
    return [(i, v.source.claim_name) for i, v in enumerate(volumes)
            if isinstance(v.source, PersistentVolumeClaim | Ephemeral)]


def is_hotpluggable(volume: Volume) -> bool:
    """A volume ``addvolume`` added, or a manifest marked ``hotpluggable``: it may come and go while its
    instance runs (proto.hotplug)."""
    return isinstance(volume.source, PersistentVolumeClaim) and volume.source.hotpluggable


class Firmware(Spec, frozen=True):
    """The identity SMBIOS gives the guest (``dmidecode -s system-uuid``, ``system-serial-number``).
    Without a UUID the guest gets the VM's stable one (proto.machine.firmware_uuid), as in KubeVirt."""

    uuid: str | None = None
    serial: str | None = None


class Timer(Spec, frozen=True):
    """One of the guest's timers as libvirt's ``<timer>``: there or not, and what it does with ticks the
    guest missed (KubeVirt's clock.timer.<name>)."""

    name: Literal["rtc", "pit", "hpet", "kvmclock"]
    present: bool = True
    tick_policy: Literal["delay", "catchup", "merge", "discard"] | None = None
    track: Literal["guest", "wall"] | None = None  # rtc only


class Clock(Spec, frozen=True):
    """Where the guest's real-time clock starts: UTC moved by ``offset_seconds``, or the local time of an
    IANA ``timezone`` (KubeVirt's clock.utc.offsetSeconds or clock.timezone); and its timers."""

    offset_seconds: int | None = None
    timezone: str | None = None
    timers: list[Timer] = []


class Features(Spec, frozen=True):
    """The platform's features (KubeVirt's domain.features): ACPI (a graceful stop presses its power
    button), the APIC, and System Management Mode."""

    acpi: bool = True
    apic: bool = True
    smm: bool = False


TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
TAINT_EFFECTS: tuple[TaintEffect, ...] = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class Taint(Spec, frozen=True):
    """Kubernetes' taint on a node (virtbus taint node): instances that do not tolerate it are not
    placed there (NoSchedule), or placed there last (PreferNoSchedule)."""

    key: str
    effect: TaintEffect
    value: str = ""


DNSPolicy = Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
DNS_POLICIES: tuple[DNSPolicy, ...] = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


class DNSOption(Spec, frozen=True):
    """A resolver option (resolv.conf's ``options``): kept and written back; DHCP has no word for it."""

    name: str
    value: str | None = None


class DNSConfig(Spec, frozen=True):
    """Kubernetes' PodDNSConfig: name servers and search domains added to what the dnsPolicy gives
    (proto.dnsconfig)."""

    nameservers: list[str] = []
    searches: list[str] = []
    options: list[DNSOption] = []


class Toleration(Spec, frozen=True):
    """Kubernetes' toleration, as a VMI's spec carries it. An empty key with Exists tolerates every
    taint; no effect, every effect. tolerationSeconds is kept and written back: it bounds how long a
    NoExecute taint is tolerated, and virtbus's taints are never NoExecute."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: TaintEffect | None = None
    toleration_seconds: int | None = None

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint."""
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


class NodeSelectorTerm(Spec, frozen=True):
    """A node matches when every requirement holds of its labels (Kubernetes' nodeSelectorTerm)."""

    match_expressions: list[Requirement]


class PreferredNodeTerm(Spec, frozen=True):
    weight: int  # 1-100, added to a node's points when the preference matches it
    preference: NodeSelectorTerm


class PodAffinityTerm(Spec, frozen=True):
    """The instances its selector picks (by their launcher pod's labels, proto.services.pod_labels), in
    the topology domain of a node: the nodes sharing that node's value of the label ``topology_key``."""

    label_selector: LabelSelector
    topology_key: str


class WeightedPodAffinityTerm(Spec, frozen=True):
    weight: int  # 1-100
    term: PodAffinityTerm


class TopologySpreadConstraint(Spec, frozen=True):
    """Kubernetes' topologySpreadConstraint: the instances its selector picks kept within ``max_skew``
    of each other across the domains of ``topology_key`` (DoNotSchedule), or spread as far as may be
    (ScheduleAnyway); with ``min_domains``, fewer domains than that count as holding none."""

    max_skew: int
    topology_key: str
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector
    min_domains: int | None = None


class Affinity(Spec, frozen=True):
    """Kubernetes' affinity, as a KubeVirt VMI carries it (proto.affinity reads and checks it; the binder
    honours it, scheduler.affinityplan): the required terms filter nodes, the preferred ones rank them."""

    node_required: list[NodeSelectorTerm] = []  # any one of them
    node_preferred: list[PreferredNodeTerm] = []
    pod_required: list[PodAffinityTerm] = []  # every one of them
    pod_preferred: list[WeightedPodAffinityTerm] = []
    anti_required: list[PodAffinityTerm] = []  # none of them
    anti_preferred: list[WeightedPodAffinityTerm] = []

    @property
    def preferences(self) -> bool:
        return bool(self.node_preferred or self.pod_preferred or self.anti_preferred)


class Probe(Spec, frozen=True):
    """KubeVirt's readinessProbe or livenessProbe: an HTTP GET (a status of 200-399 passes) or a TCP connection to a
    port of the guest at its pod address, from its node, as kubelet probes a pod (proto.probes)."""

    kind: Literal["http", "tcp"]
    port: int
    path: str = "/"  # http only
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


class DataVolumeTemplate(Spec, frozen=True):
    """A volume made with its VM and deleted with it (KubeVirt's dataVolumeTemplates, CDI's job)."""

    name: str
    size: str
    image: str | None = None  # from the image store; None: blank


class Volume(Spec, frozen=True):
    name: str
    source: VolumeSource


EvictionStrategy = Literal["None", "LiveMigrate", "LiveMigrateIfPossible", "External"]
EVICTION_STRATEGIES: tuple[EvictionStrategy, ...] = ("None", "LiveMigrate", "LiveMigrateIfPossible", "External")


def eviction_strategy(own: EvictionStrategy | None, cluster: EvictionStrategy | None) -> EvictionStrategy:
    """An instance's evictionStrategy: its spec's, else the cluster's (the KubeVirt CR's), else KubeVirt's
    default, "None"."""
    return own or cluster or "None"


class VMSpec(Spec, frozen=True):
    """What a user asks for; the same whether it came as KubeVirt YAML or virtbus JSON."""

    name: str
    run_strategy: RunStrategy = RunStrategy.HALTED
    labels: dict[str, str] = {}  # the template's: what its instances carry and Services select
    # the VM object's own (its metadata.labels): what `get vms -l` selects; its instances do not get them
    vm_labels: dict[str, str] = {}
    cpu: Cpu = Cpu()
    memory: str = "64Mi"
    disks: list[Disk] = []
    interfaces: list[Interface] = []
    networks: list[Network] = []
    volumes: list[Volume] = []
    node_selector: dict[str, str] = {}
    termination_grace_period_seconds: int = 30
    # run again on another node when its node is lost, once its old copy is certainly dead
    # (proto.fencing); the VM's annotation virtbus.io/high-availability: "true"
    high_availability: bool = False
    data_volume_templates: list[DataVolumeTemplate] = []
    instancetype: str | None = None  # what sized cpu and memory (proto.instancetypes), by name
    # The guest's host name (default: the VM's name) and, with a headless Service of the subdomain's
    # name, its DNS name <hostname>.<subdomain>.default.svc.cluster.local, as KubeVirt has them.
    hostname: str | None = None
    subdomain: str | None = None
    # the machine (proto.machine): an entropy device (virtio-rng), input devices, screen, balloon,
    # SMBIOS identity, clock, features; firmware, clock and features None where the manifest said nothing.
    rng: bool = False
    inputs: list[Input] = []
    graphics: bool = True  # KubeVirt's autoattachGraphicsDevice: a VGA card and a VNC screen
    mem_balloon: bool = False  # KubeVirt's autoattachMemBalloon; virtbus's default is none (density)
    # KubeVirt's devices.disableHotplug: no SCSI controller for volumes to be hotplugged onto, and none may be
    disable_hotplug: bool = False
    start_paused: bool = False  # KubeVirt's startStrategy: Paused: each instance starts paused
    firmware: Firmware | None = None
    clock: Clock | None = None
    features: Features | None = None
    # Ready (and so in its Services' endpoints) once this passes; None: once it runs, as before
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None  # failing, it ends the instance, Failed (proto.probes)
    # KubeVirt's evictionStrategy (None: the cluster's, which is KubeVirt's "None"): what an eviction
    # (virtbus drain) does to its instance: LiveMigrate moves it alive (or refuses when it cannot move),
    # LiveMigrateIfPossible moves it when it can, else stops it as "None" does, and "External" refuses
    # (proto.migrations.eviction_way).
    eviction_strategy: EvictionStrategy | None = None
    affinity: Affinity | None = None  # Kubernetes' affinity: where its instances may and would rather go
    tolerations: list[Toleration] = []  # the node taints its instances may stand
    topology_spread_constraints: list[TopologySpreadConstraint] = []  # how its instances spread over nodes
    # Kubernetes' dnsPolicy and dnsConfig: the name servers and search domains its guest's DHCP lease names
    dns_policy: DNSPolicy = "ClusterFirst"
    dns_config: DNSConfig | None = None
    # Kubernetes' priorityClassName (proto.priorities): how its instances rank for a node, and whom they
    # may preempt; None: the global default class's, else 0
    priority_class_name: str | None = None

    @property
    def guest_hostname(self) -> str:
        return self.hostname or self.name

    @property
    def multus_networks(self) -> list[str]:
        """The NetworkAttachmentDefinitions its secondary NICs are on, by name."""
        return [n.network_name for n in self.networks if n.kind == "multus" and n.network_name]


class NetworkAttachment(Spec, frozen=True):
    """A secondary network on a host bridge (the seed's multus NetworkAttachmentDefinition). With no
    subnet (a NAD without ipam) it is a layer-2 network: virtbus hands out no address, the guest asks
    the segment's own DHCP server."""

    name: str
    bridge: str
    subnet: str | None = None
    gateway: str | None = None
    range_start: str | None = None
    range_end: str | None = None
    # bridge: a Linux bridge on the node; ovs: an Open vSwitch bridge on the node (ovs-cni's NAD)
    type: Literal["bridge", "ovs"] = "bridge"
    vlan: int | None = None  # the VM's port is an access port of this VLAN (ovs only, for now)
