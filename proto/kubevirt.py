"""KubeVirt manifests to virtbus specs: a pure, table-driven conversion.

A VirtualMachine (kubevirt.io/v1 or v1alpha3) becomes a proto.spec.VMSpec; a NetworkAttachmentDefinition
(k8s.cni.cncf.io/v1, a CNI bridge config) a proto.spec.NetworkAttachment.

Each level of a manifest has a table of the keys virtbus knows. A key missing from its table is
something virtbus cannot honour: it is refused with its full dotted path (Code.INVALID), never dropped
silently. A value of the wrong type is a Code.BAD_REQUEST. Only keys that change nothing here (object
metadata, ``status``, ``imagePullPolicy``) are accepted and ignored. The values are checked afterwards by
proto.validation, which blames native field paths; proto.manifest turns those into KubeVirt ones.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from proto import fencing, nad
from proto.affinity import AFFINITY, SPREAD, read_affinity, read_spread
from proto.dnsconfig import DNS_CONFIG, read_dns_config
from proto.machine import CLOCK, FEATURES, FIRMWARE, MACHINE_DEVICES, read_machine
from proto.probes import KINDS as PROBE_KINDS
from proto.probes import PROBE, read_probe
from proto.quantity import InvalidQuantity, parse_bytes
from proto.schema import (
    BOOL,
    EMPTY,
    IGNORED,
    INT,
    METADATA,
    QUANTITY,
    STR,
    Choice,
    ListOf,
    Namespace,
    Object,
    Off,
    Refused,
    StrMap,
    bad,
    check_kind,
    invalid,
    one_of,
    required,
)
from proto.spec import (
    DNS_POLICIES,
    EVICTION_STRATEGIES,
    CloudInitConfigDrive,
    CloudInitNoCloud,
    ContainerDisk,
    Cpu,
    DataVolumeTemplate,
    Disk,
    EmptyDisk,
    Ephemeral,
    HostDisk,
    Interface,
    Network,
    NetworkAttachment,
    PersistentVolumeClaim,
    Port,
    RunStrategy,
    VMSpec,
    Volume,
    VolumeSource,
    is_hotpluggable,
)
from proto.taints import TOLERATIONS, read_tolerations

VM_API_VERSIONS = ("kubevirt.io/v1", "kubevirt.io/v1alpha3")
API_GROUPS = ("kubevirt.io/", "k8s.cni.cncf.io/")

BINDINGS = ("masquerade", "bridge")
NETWORK_SOURCES = ("pod", "multus")
VOLUME_SOURCES = ("containerDisk", "emptyDisk", "cloudInitNoCloud", "persistentVolumeClaim", "dataVolume",
                  "cloudInitConfigDrive", "hostDisk", "ephemeral")
DISK_DEVICES = ("disk", "cdrom", "lun")
REGISTRY_SCHEME = "docker://"  # CDI's registry source: the image of that name in the image store
TEMPLATE_SPEC = "spec.template.spec"
DOMAIN_PATH = f"{TEMPLATE_SPEC}.domain"

_DISK = Object({
    "name": STR,
    "disk": Object({"bus": Choice(("virtio", "sata", "scsi")), "readonly": BOOL}),
    # virtio is no cdrom bus (KubeVirt refuses it too); an open tray is a drive with no medium, which
    # no virtbus volume is: a cdrom holds its volume from the start
    "cdrom": Object({"bus": Choice(("sata", "scsi")), "readonly": BOOL, "tray": Choice(("closed",))}),
    # KubeVirt's lun is device='lun', SCSI commands passed through to a block device; every virtbus
    # volume (and hostDisk) is a file, where libvirt cannot do that, and a plain scsi disk in its
    # place would fail the very commands (reservations, SG_IO) a lun is asked for
    "lun": Refused("a lun passes SCSI commands through to a block device, and every virtbus volume is a file; "
                   "use disk: {bus: scsi}"),
    "bootOrder": INT,
    "serial": STR, "cache": Choice(("none", "writethrough", "writeback")), "io": Choice(("native", "threads")),
})
_PORT = Object({"port": INT, "protocol": Choice(("TCP", "UDP")), "name": STR})
_INTERFACE = Object({
    "name": STR, "masquerade": EMPTY, "bridge": EMPTY, "macAddress": STR, "ports": ListOf(_PORT),
    "model": Choice(("virtio", "e1000")),
})
_NETWORK = Object({"name": STR, "pod": EMPTY, "multus": Object({"networkName": STR})})
_VOLUME = Object({
    "name": STR,
    "containerDisk": Object({"image": STR, "imagePullPolicy": IGNORED}),  # images come from the store
    "emptyDisk": Object({"capacity": QUANTITY}),
    "cloudInitNoCloud": Object(dict.fromkeys(
        ("userData", "userDataBase64", "networkData", "networkDataBase64"), STR)),
    # a virtbus volume of that name; hotpluggable: attached and removed while it runs (proto.hotplug)
    "persistentVolumeClaim": Object({"claimName": STR, "hotpluggable": BOOL}),
    "dataVolume": Object({"name": STR, "hotpluggable": BOOL}),
    # the secretRefs are not here: virtbus has no Secrets, so they are refused by path
    "cloudInitConfigDrive": Object(dict.fromkeys(
        ("userData", "userDataBase64", "networkData", "networkDataBase64"), STR)),
    "hostDisk": Object({"path": STR, "type": Choice(("Disk", "DiskOrCreate")), "capacity": QUANTITY,
                        "shared": Off()}),  # one node's file, never shared between nodes
    # readOnly either way: the overlay never writes the volume
    "ephemeral": Object({"persistentVolumeClaim": Object({"claimName": STR, "readOnly": BOOL})}),
})
_STORAGE = Object({
    "resources": Object({"requests": Object({"storage": QUANTITY})}),
    # one node's file: every access mode and class comes down to it
    "accessModes": IGNORED, "storageClassName": IGNORED, "volumeMode": Choice(("Filesystem", "Block")),
})
_DATA_VOLUME_TEMPLATE = Object({
    "apiVersion": STR, "kind": STR,
    "metadata": Object({"name": STR, "labels": IGNORED, "annotations": IGNORED, "creationTimestamp": IGNORED}),
    "spec": Object({
        "source": Object({"blank": EMPTY, "registry": Object({"url": STR, "pullMethod": IGNORED})}),
        "storage": _STORAGE, "pvc": _STORAGE,
    }),
})
_DOMAIN = Object({
    "cpu": Object({"cores": INT, "sockets": INT, "threads": INT}),
    "memory": Object({"guest": QUANTITY}),
    # no cpu here: KubeVirt sizes the vCPUs from it when cpu.cores is absent, virtbus does not
    "resources": Object({"requests": Object({"memory": QUANTITY}), "limits": Object({"memory": QUANTITY})}),
    "devices": Object({"disks": ListOf(_DISK), "interfaces": ListOf(_INTERFACE), "autoattachPodInterface": BOOL,
                       "disableHotplug": BOOL, **MACHINE_DEVICES}),
    "firmware": FIRMWARE, "clock": CLOCK, "features": FEATURES,  # proto.machine
})
_VM = Object({
    "apiVersion": STR,
    "kind": STR,
    "metadata": METADATA,
    "spec": Object({
        "running": BOOL,
        "runStrategy": Choice(tuple(strategy.value for strategy in RunStrategy)),
        "dataVolumeTemplates": ListOf(_DATA_VOLUME_TEMPLATE),
        # proto.instancetypes.expand has written its size into the template before this reads it
        "instancetype": Object({"name": STR, "kind": STR, "revisionName": IGNORED}),
        # proto.preferences.expand has applied it to the template before this reads it
        "preference": Object({"name": STR, "kind": STR, "revisionName": IGNORED}),
        "template": Object({
            "metadata": Object({"labels": StrMap(), "name": IGNORED, "annotations": IGNORED,
                                 "creationTimestamp": IGNORED}),
            "spec": Object({
                "domain": _DOMAIN,
                "networks": ListOf(_NETWORK),
                "volumes": ListOf(_VOLUME),
                "nodeSelector": StrMap(),
                "terminationGracePeriodSeconds": INT,
                "hostname": STR, "subdomain": STR,
                "startStrategy": Choice(("Paused",)),
                "evictionStrategy": Choice(EVICTION_STRATEGIES),
                "affinity": AFFINITY,  # proto.affinity
                "tolerations": TOLERATIONS,  # proto.taints
                "topologySpreadConstraints": SPREAD,  # proto.affinity
                # what KubeVirt writes into every VMI it defaults: the only one virtbus's nodes run (x86-64 QEMU)
                "architecture": Choice(("amd64",)),
                "dnsPolicy": Choice(DNS_POLICIES), "dnsConfig": DNS_CONFIG,  # proto.dnsconfig
                "priorityClassName": STR,  # proto.priorities
                "readinessProbe": PROBE, "livenessProbe": PROBE,  # proto.probes
            }),
        }),
    }),
    "status": IGNORED,
})


# --- building the spec from the cleaned tree


def from_kubevirt(obj: Mapping[str, Any]) -> VMSpec | NetworkAttachment:
    """Convert a KubeVirt VirtualMachine or a NetworkAttachmentDefinition; not yet validated."""
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and api_version.startswith("k8s.cni.cncf.io/"):
        return nad.network_from_nad(obj)
    return vm_from_kubevirt(obj)


def vm_from_kubevirt(obj: Mapping[str, Any]) -> VMSpec:
    check_kind(obj, VM_API_VERSIONS, "VirtualMachine")
    tree = _VM.walk(obj, "")
    metadata = required(tree, "metadata", "")
    name = required(metadata, "name", "metadata")
    spec = required(tree, "spec", "")
    template = required(spec, "template", "spec")
    tspec = required(template, "spec", "spec.template")
    domain = required(tspec, "domain", TEMPLATE_SPEC)
    devices, cpu = domain.get("devices", {}), domain.get("cpu", {})
    extra: dict[str, Any] = {}
    if "terminationGracePeriodSeconds" in tspec:
        extra["termination_grace_period_seconds"] = tspec["terminationGracePeriodSeconds"]
    # Annotations are free text virtbus otherwise ignores (kubectl's last-applied among them); the
    # walk drops them, so this one is read from the manifest as given.
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise bad("metadata.annotations", "metadata.annotations must be a map of strings")
    if "instancetype" in spec:
        extra["instancetype"] = spec["instancetype"]["name"]
    for key in ("hostname", "subdomain"):
        if key in tspec:
            extra[key] = tspec[key]
    if tspec.get("startStrategy") == "Paused":
        extra["start_paused"] = True
    if "evictionStrategy" in tspec:
        extra["eviction_strategy"] = tspec["evictionStrategy"]
    if "dnsPolicy" in tspec:
        extra["dns_policy"] = tspec["dnsPolicy"]
    if "priorityClassName" in tspec:
        extra["priority_class_name"] = tspec["priorityClassName"]
    if "dnsConfig" in tspec:
        extra["dns_config"] = read_dns_config(tspec["dnsConfig"], f"{TEMPLATE_SPEC}.dnsConfig")
    if tspec.get("affinity"):
        extra["affinity"] = read_affinity(tspec["affinity"], f"{TEMPLATE_SPEC}.affinity")
    if tspec.get("topologySpreadConstraints"):
        extra["topology_spread_constraints"] = read_spread(tspec["topologySpreadConstraints"],
                                                           f"{TEMPLATE_SPEC}.topologySpreadConstraints")
    if tspec.get("tolerations"):
        extra["tolerations"] = read_tolerations(tspec["tolerations"], f"{TEMPLATE_SPEC}.tolerations")
    for attr, key in PROBE_KINDS.items():
        if key in tspec:
            extra[attr] = read_probe(tspec[key], f"{TEMPLATE_SPEC}.{key}")
    if fencing.ANNOTATION in annotations:
        extra["high_availability"] = fencing.parse_annotation(
            annotations[fencing.ANNOTATION], f"metadata.annotations.{fencing.ANNOTATION}")

    def each(items: list[Any], path: str) -> list[tuple[Any, str]]:
        return [(item, f"{path}[{index}]") for index, item in enumerate(items)]

    disks = [_disk(d, p) for d, p in each(devices.get("disks", []), f"{DOMAIN_PATH}.devices.disks")]
    volumes = [_volume(v, p) for v, p in each(tspec.get("volumes", []), f"{TEMPLATE_SPEC}.volumes")]
    interfaces = [_interface(i, p) for i, p in each(devices.get("interfaces", []), f"{DOMAIN_PATH}.devices.interfaces")]
    networks = [_network(n, p) for n, p in each(tspec.get("networks", []), f"{TEMPLATE_SPEC}.networks")]
    return VMSpec(
        name=name,
        run_strategy=_run_strategy(spec),
        labels=template.get("metadata", {}).get("labels", {}),
        vm_labels=metadata.get("labels", {}),
        cpu=Cpu(cores=cpu.get("cores", 1), sockets=cpu.get("sockets", 1), threads=cpu.get("threads", 1)),
        memory=_memory(domain),
        disks=disks + volume_disks(volumes, disks),
        disable_hotplug=devices.get("disableHotplug", False),
        **pod_interface(interfaces, networks, devices.get("autoattachPodInterface", True)),
        volumes=volumes,
        node_selector=tspec.get("nodeSelector", {}),
        data_volume_templates=[_template(t, p) for t, p in each(spec.get("dataVolumeTemplates", []),
                                                                "spec.dataVolumeTemplates")],
        **read_machine(domain, DOMAIN_PATH),
        **extra,
    )


def volume_disks(volumes: list[Volume], disks: list[Disk]) -> list[Disk]:
    """KubeVirt's defaults (SetDefaultVolumeDisk): a volume that names no disk is a disk of its own,
    as `virtctl create vm` writes them; a hotpluggable one's on the scsi bus (proto.hotplug)."""
    named = {d.name for d in disks}
    return [Disk(name=v.name, bus="scsi" if is_hotpluggable(v) else "virtio") for v in volumes if v.name not in named]


def pod_interface(interfaces: list[Interface], networks: list[Network], autoattach: bool) -> dict[str, Any]:
    """KubeVirt's autoattachPodInterface: a VM that names no interface and no network is on the pod
    network, bound as KubeVirt binds by default (bridge); autoattachPodInterface: false leaves it off."""
    if not interfaces and not networks and autoattach:
        return {"interfaces": [Interface(name="default", binding="bridge")],
                "networks": [Network(name="default", kind="pod")]}
    return {"interfaces": interfaces, "networks": networks}


def _template(template: Mapping[str, Any], path: str) -> DataVolumeTemplate:
    name = required(required(template, "metadata", path), "name", f"{path}.metadata")
    spec = required(template, "spec", path)
    where = f"{path}.spec"
    storage_key = one_of(spec, ("storage", "pvc"), where, "size")
    at = f"{where}.{storage_key}"
    requests = required(required(spec[storage_key], "resources", at), "requests", f"{at}.resources")
    size = required(requests, "storage", f"{at}.resources.requests")
    source = required(spec, "source", where)
    if one_of(source, ("blank", "registry"), f"{where}.source", "source") == "blank":
        return DataVolumeTemplate(name=name, size=size)
    url = required(source["registry"], "url", f"{where}.source.registry")
    if not url.startswith(REGISTRY_SCHEME):
        raise invalid(f"{where}.source.registry.url", f"a registry url starts with {REGISTRY_SCHEME}; the image of "
                                                       "that name in virtbus's image store is used")
    return DataVolumeTemplate(name=name, size=size, image=url.removeprefix(REGISTRY_SCHEME))


def _run_strategy(spec: Mapping[str, Any]) -> RunStrategy:
    running, strategy = spec.get("running"), spec.get("runStrategy")
    if running is not None and strategy is not None:
        raise invalid("spec.runStrategy", "spec.running and spec.runStrategy are mutually exclusive")
    if strategy is not None:
        return RunStrategy(strategy)
    return RunStrategy.ALWAYS if running else RunStrategy.HALTED


def _bytes(text: str, path: str) -> int:
    try:
        return parse_bytes(text)
    except InvalidQuantity as exc:
        raise invalid(path, f"{path}: {exc}") from None


def _memory(domain: Mapping[str, Any]) -> str:
    """The guest's memory: requests, else memory.guest, else limits (Kubernetes defaults requests to it)."""
    resources = domain.get("resources", {})
    requested, guest, limit = (resources.get("requests", {}).get("memory"), domain.get("memory", {}).get("guest"),
                               resources.get("limits", {}).get("memory"))
    requested_at, guest_at, limit_at = (f"{DOMAIN_PATH}.{key}" for key in
                                        ("resources.requests.memory", "memory.guest", "resources.limits.memory"))
    if requested is not None and guest is not None and _bytes(guest, guest_at) != _bytes(requested, requested_at):
        raise invalid(guest_at, f"{guest_at} different from resources.requests.memory (memory overcommit) "
                                 "is not supported by virtbus")
    memory, memory_at = next(((value, at) for value, at in ((requested, requested_at), (guest, guest_at),
                                                             (limit, limit_at)) if value is not None), (None, ""))
    if memory is None:
        raise invalid(requested_at, f"{requested_at} (or {guest_at}) is required")
    if limit is not None and _bytes(limit, limit_at) < _bytes(memory, memory_at):
        raise invalid(limit_at, f"{limit_at} {limit} is less than the guest's memory {memory}")
    return str(memory)


def _disk(disk: Mapping[str, Any], path: str) -> Disk:
    name = required(disk, "name", path)
    devices = [key for key in DISK_DEVICES if key in disk]
    if len(devices) > 1:
        raise invalid(f"{path}.{devices[1]}", f"{path} is a {devices[0]} and a {devices[1]}: at most one of "
                                              f"{', '.join(DISK_DEVICES)}")
    if "cdrom" in disk:
        cdrom = disk["cdrom"]
        if cdrom.get("readonly") is False:  # KubeVirt's cdrom defaults to read-only; QEMU's is always
            raise invalid(f"{path}.cdrom.readonly", f"{path}.cdrom.readonly false is not supported: a cdrom is "
                                                    "read-only media")
        return Disk(name=name, device="cdrom", bus=cdrom.get("bus", "sata"), readonly=True,
                    boot_order=disk.get("bootOrder"), **_disk_options(disk))
    target = disk.get("disk", {})
    return Disk(name=name, bus=target.get("bus", "virtio"), readonly=target.get("readonly", False),
                boot_order=disk.get("bootOrder"), **_disk_options(disk))


def _disk_options(disk: Mapping[str, Any]) -> dict[str, Any]:
    return {key: disk[key] for key in ("serial", "cache", "io") if key in disk}


def _interface(iface: Mapping[str, Any], path: str) -> Interface:
    ports = [
        Port(port=required(port, "port", f"{path}.ports[{index}]"), protocol=port.get("protocol", "TCP"),
             name=port.get("name"))
        for index, port in enumerate(iface.get("ports", []))
    ]
    return Interface(name=required(iface, "name", path), binding=one_of(iface, BINDINGS, path, "binding"),
                     mac_address=iface.get("macAddress"), ports=ports, model=iface.get("model", "virtio"))


def _network(network: Mapping[str, Any], path: str) -> Network:
    name = required(network, "name", path)
    if one_of(network, NETWORK_SOURCES, path, "network source") == "pod":
        return Network(name=name, kind="pod")
    where = f"{path}.multus"
    network_name = required(network["multus"], "networkName", where)
    # Multus names a NetworkAttachmentDefinition in another namespace as <namespace>/<name>
    namespace, slash, bare = network_name.rpartition("/")
    if slash:
        Namespace().walk(namespace, f"{where}.networkName")
    return Network(name=name, kind="multus", network_name=bare)


def _volume(volume: Mapping[str, Any], path: str) -> Volume:
    name = required(volume, "name", path)
    kind = one_of(volume, VOLUME_SOURCES, path, "volume source")
    body, where = volume[kind], f"{path}.{kind}"
    source: VolumeSource
    if kind == "containerDisk":
        source = ContainerDisk(image=required(body, "image", where))
    elif kind == "emptyDisk":
        source = EmptyDisk(capacity=required(body, "capacity", where))
    elif kind == "persistentVolumeClaim":
        source = PersistentVolumeClaim(claim_name=required(body, "claimName", where),
                                       hotpluggable=body.get("hotpluggable", False))
    elif kind == "dataVolume":
        source = PersistentVolumeClaim(claim_name=required(body, "name", where),
                                       hotpluggable=body.get("hotpluggable", False))
    elif kind == "hostDisk":
        source = HostDisk(path=required(body, "path", where), kind=required(body, "type", where),
                          capacity=body.get("capacity"))
    elif kind == "ephemeral":
        claim = required(body, "persistentVolumeClaim", where)
        source = Ephemeral(claim_name=required(claim, "claimName", f"{where}.persistentVolumeClaim"))
    elif kind == "cloudInitConfigDrive":
        source = CloudInitConfigDrive(user_data=_cloud_text(body, "userData", where) or "",
                                      network_data=_cloud_text(body, "networkData", where))
    else:
        source = CloudInitNoCloud(user_data=_cloud_text(body, "userData", where) or "",
                                  network_data=_cloud_text(body, "networkData", where))
    return Volume(name=name, source=source)


def _cloud_text(body: Mapping[str, Any], key: str, path: str) -> str | None:
    plain, encoded = body.get(key), body.get(f"{key}Base64")
    where = f"{path}.{key}Base64"
    if plain is not None and encoded is not None:
        raise invalid(where, f"{path}.{key} and {key}Base64 are mutually exclusive")
    if encoded is None:
        return plain
    try:  # like Go's base64.StdEncoding, line breaks are skipped
        raw = base64.b64decode(encoded.replace("\n", "").replace("\r", ""), validate=True)
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(where, f"{where} does not decode to UTF-8 text") from None
    except ValueError as exc:  # binascii.Error, or a non-ASCII character, which b64decode refuses so
        raise invalid(where, f"{where} is not valid base64: {exc}") from None
