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
import binascii
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proto import fencing
from proto.errors import ApiError, Code
from proto.quantity import InvalidQuantity, parse_bytes
from proto.spec import (
    CloudInitNoCloud,
    ContainerDisk,
    Cpu,
    DataVolumeTemplate,
    Disk,
    EmptyDisk,
    Interface,
    Network,
    NetworkAttachment,
    PersistentVolumeClaim,
    Port,
    RunStrategy,
    VMSpec,
    Volume,
    VolumeSource,
)

VM_API_VERSIONS = ("kubevirt.io/v1", "kubevirt.io/v1alpha3")
NAD_API_VERSIONS = ("k8s.cni.cncf.io/v1",)
API_GROUPS = ("kubevirt.io/", "k8s.cni.cncf.io/")

BINDINGS = ("masquerade", "bridge")
NETWORK_SOURCES = ("pod", "multus")
VOLUME_SOURCES = ("containerDisk", "emptyDisk", "cloudInitNoCloud", "persistentVolumeClaim", "dataVolume")
REGISTRY_SCHEME = "docker://"  # CDI's registry source: the image of that name in the image store
TEMPLATE_SPEC = "spec.template.spec"
DOMAIN_PATH = f"{TEMPLATE_SPEC}.domain"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _bad(path: str, message: str) -> ApiError:  # the wrong type: the request is malformed
    return ApiError(Code.BAD_REQUEST, message, field=path or None)


def _invalid(path: str, message: str) -> ApiError:  # well formed, but not something virtbus can honour
    return ApiError(Code.INVALID, message, field=path)


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --- the walker: a node per level checks a value's shape and returns it cleaned


class _Node:
    def walk(self, value: Any, path: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Scalar(_Node):
    kind: type
    what: str

    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise _bad(path, f"{path} must be {self.what}, not {_type_name(value)}")
        return value


STR = _Scalar(str, "a string")
INT = _Scalar(int, "an integer")
BOOL = _Scalar(bool, "a boolean")


@dataclass(frozen=True)
class _Choice(_Node):
    """A string from a fixed set; any other value is one virtbus does not support."""

    allowed: tuple[str, ...]

    def walk(self, value: Any, path: str) -> Any:
        STR.walk(value, path)
        if value not in self.allowed:
            raise _invalid(path, f"{path} {value!r} is not supported by virtbus "
                                 f"(supported: {', '.join(self.allowed)})")
        return value


@dataclass(frozen=True)
class _Off(_Node):
    """A boolean flag virtbus does not implement: accepted only when false."""

    def walk(self, value: Any, path: str) -> Any:
        if BOOL.walk(value, path):
            raise _invalid(path, f"{path} true is not supported by virtbus")
        return value


class _Quantity(_Node):
    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _bad(path, f"{path} must be a quantity such as 64Mi, not {_type_name(value)}")
        return str(value)


class _StrMap(_Node):
    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad(path, f"{path} must be an object of strings, not {_type_name(value)}")
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise _bad(path, f"{path} must map strings to strings; {key!r}: {item!r} does not")
        return dict(value)


@dataclass(frozen=True)
class _List(_Node):
    item: _Node

    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _bad(path, f"{path} must be a list, not {_type_name(value)}")
        return [self.item.walk(item, f"{path}[{index}]") for index, item in enumerate(value)]


class _Ignored(_Node):
    """Accepted and dropped: it has no effect in virtbus."""


@dataclass(frozen=True)
class _Object(_Node):
    fields: Mapping[str, _Node]

    def walk(self, value: Any, path: str) -> Any:
        if value is None:  # `pod:` in YAML reads as `pod: {}`
            value = {}
        if not isinstance(value, dict):
            raise _bad(path, f"{path or 'a manifest'} must be an object, not {_type_name(value)}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(path, f"{path or 'the manifest'} has a key that is not a string: {key!r}")
            child = _join(path, key)
            node = self.fields.get(key)
            if node is None:
                raise _invalid(child, f"{child} is not supported by virtbus")
            if isinstance(node, _Ignored) or (item is None and not isinstance(node, _Object)):
                continue  # null is absent, as in Kubernetes
            out[key] = node.walk(item, child)
        return out


IGNORED = _Ignored()
EMPTY = _Object({})
QUANTITY = _Quantity()

_METADATA = _Object({
    "name": STR,
    "labels": _StrMap(),  # the VM object's own; the instance's are the template's
    **dict.fromkeys(("namespace", "annotations", "uid", "resourceVersion", "creationTimestamp",
                     "generation", "managedFields", "selfLink", "finalizers"), IGNORED),
})
_DISK = _Object({"name": STR, "disk": _Object({"bus": _Choice(("virtio", "sata", "scsi"))}), "bootOrder": INT})
_PORT = _Object({"port": INT, "protocol": _Choice(("TCP", "UDP")), "name": STR})
_INTERFACE = _Object({
    "name": STR, "masquerade": EMPTY, "bridge": EMPTY, "macAddress": STR, "ports": _List(_PORT),
    "model": _Choice(("virtio", "e1000")),
})
_NETWORK = _Object({"name": STR, "pod": EMPTY, "multus": _Object({"networkName": STR})})
_VOLUME = _Object({
    "name": STR,
    "containerDisk": _Object({"image": STR, "imagePullPolicy": IGNORED}),  # images come from the store
    "emptyDisk": _Object({"capacity": QUANTITY}),
    "cloudInitNoCloud": _Object(dict.fromkeys(
        ("userData", "userDataBase64", "networkData", "networkDataBase64"), STR)),
    "persistentVolumeClaim": _Object({"claimName": STR}),  # a virtbus volume of that name
    "dataVolume": _Object({"name": STR, "hotpluggable": _Off()}),
})
_STORAGE = _Object({
    "resources": _Object({"requests": _Object({"storage": QUANTITY})}),
    # one node's file: every access mode and class comes down to it
    "accessModes": IGNORED, "storageClassName": IGNORED, "volumeMode": _Choice(("Filesystem", "Block")),
})
_DATA_VOLUME_TEMPLATE = _Object({
    "apiVersion": STR, "kind": STR,
    "metadata": _Object({"name": STR, "labels": IGNORED, "annotations": IGNORED, "creationTimestamp": IGNORED}),
    "spec": _Object({
        "source": _Object({"blank": EMPTY, "registry": _Object({"url": STR, "pullMethod": IGNORED})}),
        "storage": _STORAGE, "pvc": _STORAGE,
    }),
})
_DOMAIN = _Object({
    "cpu": _Object({"cores": INT, "sockets": INT, "threads": INT}),
    "memory": _Object({"guest": QUANTITY}),
    # no cpu here: KubeVirt sizes the vCPUs from it when cpu.cores is absent, virtbus does not
    "resources": _Object({"requests": _Object({"memory": QUANTITY}), "limits": _Object({"memory": QUANTITY})}),
    "devices": _Object({"disks": _List(_DISK), "interfaces": _List(_INTERFACE)}),
})
_VM = _Object({
    "apiVersion": STR,
    "kind": STR,
    "metadata": _METADATA,
    "spec": _Object({
        "running": BOOL,
        "runStrategy": _Choice(tuple(strategy.value for strategy in RunStrategy)),
        "dataVolumeTemplates": _List(_DATA_VOLUME_TEMPLATE),
        # proto.instancetypes.expand has written its size into the template before this reads it
        "instancetype": _Object({"name": STR, "kind": STR, "revisionName": IGNORED}),
        "template": _Object({
            "metadata": _Object({"labels": _StrMap(), "name": IGNORED, "annotations": IGNORED,
                                 "creationTimestamp": IGNORED}),
            "spec": _Object({
                "domain": _DOMAIN,
                "networks": _List(_NETWORK),
                "volumes": _List(_VOLUME),
                "nodeSelector": _StrMap(),
                "terminationGracePeriodSeconds": INT,
            }),
        }),
    }),
    "status": IGNORED,
})
_NAD = _Object({"apiVersion": STR, "kind": STR, "metadata": _METADATA, "spec": _Object({"config": STR}),
                "status": IGNORED})
_CNI_BRIDGE = _Object({
    "cniVersion": STR,
    "name": STR,
    "type": _Choice(("bridge",)),
    "bridge": STR,
    "isGateway": _Off(),  # virtbus gives the host bridge no address
    "ipMasq": _Off(),  # nor masquerades the network's traffic
    "ipam": _Object({
        "type": _Choice(("host-local", "whereabouts")),  # virtbus allocates from the subnet, like these
        "subnet": STR, "rangeStart": STR, "rangeEnd": STR, "gateway": STR,
        "range": STR, "range_start": STR, "range_end": STR,  # whereabouts spelling
    }),
})


# --- building the spec from the cleaned tree


def _required(tree: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in tree:
        raise _invalid(_join(path, key), f"{_join(path, key)} is required")
    return tree[key]


def _one_of(tree: Mapping[str, Any], keys: tuple[str, ...], path: str, what: str) -> Any:
    present = [key for key in keys if key in tree]
    if len(present) != 1:
        raise _invalid(path, f"{path} needs exactly one {what}: {' or '.join(keys)}")
    return present[0]


def _check_kind(obj: Mapping[str, Any], versions: tuple[str, ...], kind: str) -> None:
    api_version, got = obj.get("apiVersion"), obj.get("kind")
    if api_version not in versions:
        raise _bad("apiVersion", f"apiVersion {api_version!r} is not supported: use {' or '.join(versions)}")
    if got != kind:
        raise _invalid("kind", f"kind {got!r} is not supported by virtbus for {api_version} (only {kind})")


def from_kubevirt(obj: Mapping[str, Any]) -> VMSpec | NetworkAttachment:
    """Convert a KubeVirt VirtualMachine or a NetworkAttachmentDefinition; not yet validated."""
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and api_version.startswith("k8s.cni.cncf.io/"):
        return network_from_nad(obj)
    return vm_from_kubevirt(obj)


def vm_from_kubevirt(obj: Mapping[str, Any]) -> VMSpec:
    _check_kind(obj, VM_API_VERSIONS, "VirtualMachine")
    tree = _VM.walk(obj, "")
    name = _required(_required(tree, "metadata", ""), "name", "metadata")
    spec = _required(tree, "spec", "")
    template = _required(spec, "template", "spec")
    tspec = _required(template, "spec", "spec.template")
    domain = _required(tspec, "domain", TEMPLATE_SPEC)
    devices, cpu = domain.get("devices", {}), domain.get("cpu", {})
    extra: dict[str, Any] = {}
    if "terminationGracePeriodSeconds" in tspec:
        extra["termination_grace_period_seconds"] = tspec["terminationGracePeriodSeconds"]
    # Annotations are free text virtbus otherwise ignores (kubectl's last-applied among them); the
    # walk drops them, so this one is read from the manifest as given.
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise _bad("metadata.annotations", "metadata.annotations must be a map of strings")
    if "instancetype" in spec:
        extra["instancetype"] = spec["instancetype"]["name"]
    if fencing.ANNOTATION in annotations:
        extra["high_availability"] = fencing.parse_annotation(
            annotations[fencing.ANNOTATION], f"metadata.annotations.{fencing.ANNOTATION}")

    def each(items: list[Any], path: str) -> list[tuple[Any, str]]:
        return [(item, f"{path}[{index}]") for index, item in enumerate(items)]

    return VMSpec(
        name=name,
        run_strategy=_run_strategy(spec),
        labels=template.get("metadata", {}).get("labels", {}),
        cpu=Cpu(cores=cpu.get("cores", 1), sockets=cpu.get("sockets", 1), threads=cpu.get("threads", 1)),
        memory=_memory(domain),
        disks=[_disk(d, p) for d, p in each(devices.get("disks", []), f"{DOMAIN_PATH}.devices.disks")],
        interfaces=[_interface(i, p) for i, p in
                    each(devices.get("interfaces", []), f"{DOMAIN_PATH}.devices.interfaces")],
        networks=[_network(n, p) for n, p in each(tspec.get("networks", []), f"{TEMPLATE_SPEC}.networks")],
        volumes=[_volume(v, p) for v, p in each(tspec.get("volumes", []), f"{TEMPLATE_SPEC}.volumes")],
        node_selector=tspec.get("nodeSelector", {}),
        data_volume_templates=[_template(t, p) for t, p in each(spec.get("dataVolumeTemplates", []),
                                                                "spec.dataVolumeTemplates")],
        **extra,
    )


def _template(template: Mapping[str, Any], path: str) -> DataVolumeTemplate:
    name = _required(_required(template, "metadata", path), "name", f"{path}.metadata")
    spec = _required(template, "spec", path)
    where = f"{path}.spec"
    storage_key = _one_of(spec, ("storage", "pvc"), where, "size")
    at = f"{where}.{storage_key}"
    requests = _required(_required(spec[storage_key], "resources", at), "requests", f"{at}.resources")
    size = _required(requests, "storage", f"{at}.resources.requests")
    source = _required(spec, "source", where)
    if _one_of(source, ("blank", "registry"), f"{where}.source", "source") == "blank":
        return DataVolumeTemplate(name=name, size=size)
    url = _required(source["registry"], "url", f"{where}.source.registry")
    if not url.startswith(REGISTRY_SCHEME):
        raise _invalid(f"{where}.source.registry.url", f"a registry url starts with {REGISTRY_SCHEME}; the image of "
                                                       "that name in virtbus's image store is used")
    return DataVolumeTemplate(name=name, size=size, image=url.removeprefix(REGISTRY_SCHEME))


def _run_strategy(spec: Mapping[str, Any]) -> RunStrategy:
    running, strategy = spec.get("running"), spec.get("runStrategy")
    if running is not None and strategy is not None:
        raise _invalid("spec.runStrategy", "spec.running and spec.runStrategy are mutually exclusive")
    if strategy is not None:
        return RunStrategy(strategy)
    return RunStrategy.ALWAYS if running else RunStrategy.HALTED


def _bytes(text: str, path: str) -> int:
    try:
        return parse_bytes(text)
    except InvalidQuantity as exc:
        raise _invalid(path, f"{path}: {exc}") from None


def _memory(domain: Mapping[str, Any]) -> str:
    """The guest's memory: requests, else memory.guest, else limits (Kubernetes defaults requests to it)."""
    resources = domain.get("resources", {})
    requested, guest, limit = (resources.get("requests", {}).get("memory"), domain.get("memory", {}).get("guest"),
                               resources.get("limits", {}).get("memory"))
    requested_at, guest_at, limit_at = (f"{DOMAIN_PATH}.{key}" for key in
                                        ("resources.requests.memory", "memory.guest", "resources.limits.memory"))
    if requested is not None and guest is not None and _bytes(guest, guest_at) != _bytes(requested, requested_at):
        raise _invalid(guest_at, f"{guest_at} different from resources.requests.memory (memory overcommit) "
                                 "is not supported by virtbus")
    memory, memory_at = next(((value, at) for value, at in ((requested, requested_at), (guest, guest_at),
                                                             (limit, limit_at)) if value is not None), (None, ""))
    if memory is None:
        raise _invalid(requested_at, f"{requested_at} (or {guest_at}) is required")
    if limit is not None and _bytes(limit, limit_at) < _bytes(memory, memory_at):
        raise _invalid(limit_at, f"{limit_at} {limit} is less than the guest's memory {memory}")
    return str(memory)


def _disk(disk: Mapping[str, Any], path: str) -> Disk:
    return Disk(name=_required(disk, "name", path), bus=disk.get("disk", {}).get("bus", "virtio"),
                boot_order=disk.get("bootOrder"))


def _interface(iface: Mapping[str, Any], path: str) -> Interface:
    ports = [
        Port(port=_required(port, "port", f"{path}.ports[{index}]"), protocol=port.get("protocol", "TCP"),
             name=port.get("name"))
        for index, port in enumerate(iface.get("ports", []))
    ]
    return Interface(name=_required(iface, "name", path), binding=_one_of(iface, BINDINGS, path, "binding"),
                     mac_address=iface.get("macAddress"), ports=ports, model=iface.get("model", "virtio"))


def _network(network: Mapping[str, Any], path: str) -> Network:
    name = _required(network, "name", path)
    if _one_of(network, NETWORK_SOURCES, path, "network source") == "pod":
        return Network(name=name, kind="pod")
    return Network(name=name, kind="multus",
                   network_name=_required(network["multus"], "networkName", f"{path}.multus"))


def _volume(volume: Mapping[str, Any], path: str) -> Volume:
    name = _required(volume, "name", path)
    kind = _one_of(volume, VOLUME_SOURCES, path, "volume source")
    body, where = volume[kind], f"{path}.{kind}"
    source: VolumeSource
    if kind == "containerDisk":
        source = ContainerDisk(image=_required(body, "image", where))
    elif kind == "emptyDisk":
        source = EmptyDisk(capacity=_required(body, "capacity", where))
    elif kind == "persistentVolumeClaim":
        source = PersistentVolumeClaim(claim_name=_required(body, "claimName", where))
    elif kind == "dataVolume":
        source = PersistentVolumeClaim(claim_name=_required(body, "name", where))
    else:
        source = CloudInitNoCloud(user_data=_cloud_text(body, "userData", where) or "",
                                  network_data=_cloud_text(body, "networkData", where))
    return Volume(name=name, source=source)


def _cloud_text(body: Mapping[str, Any], key: str, path: str) -> str | None:
    plain, encoded = body.get(key), body.get(f"{key}Base64")
    where = f"{path}.{key}Base64"
    if plain is not None and encoded is not None:
        raise _invalid(where, f"{path}.{key} and {key}Base64 are mutually exclusive")
    if encoded is None:
        return plain
    try:  # like Go's base64.StdEncoding, line breaks are skipped
        raw = base64.b64decode(encoded.replace("\n", "").replace("\r", ""), validate=True)
        return raw.decode("utf-8")
    except binascii.Error as exc:
        raise _invalid(where, f"{where} is not valid base64: {exc}") from None
    except UnicodeDecodeError:
        raise _invalid(where, f"{where} does not decode to UTF-8 text") from None


# --- NetworkAttachmentDefinition


def network_from_nad(obj: Mapping[str, Any]) -> NetworkAttachment:
    _check_kind(obj, NAD_API_VERSIONS, "NetworkAttachmentDefinition")
    tree = _NAD.walk(obj, "")
    name = _required(_required(tree, "metadata", ""), "name", "metadata")
    where = "spec.config"
    try:
        config = json.loads(_required(_required(tree, "spec", ""), "config", "spec"))
    except json.JSONDecodeError as exc:
        raise _bad(where, f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad(where, f"{where} is nested too deeply") from None
    cni = _CNI_BRIDGE.walk(config, where)
    _required(cni, "type", where)
    ipam = _required(cni, "ipam", where)
    subnet = ipam.get("subnet")
    if subnet is not None and "range" in ipam:
        raise _invalid(f"{where}.ipam.range", f"{where}.ipam.subnet and range are mutually exclusive")
    if subnet is None and "range" in ipam:
        try:  # whereabouts writes the range as an address inside the subnet: 192.168.2.225/28
            subnet = str(ipaddress.ip_network(ipam["range"], strict=False))
        except ValueError as exc:
            raise _invalid(f"{where}.ipam.range", f"{where}.ipam.range: {exc}") from None
    if subnet is None:
        raise _invalid(f"{where}.ipam.subnet", f"{where}.ipam.subnet is required")
    return NetworkAttachment(
        name=name,
        bridge=_required(cni, "bridge", where),
        subnet=subnet,
        gateway=ipam.get("gateway"),
        range_start=ipam.get("rangeStart", ipam.get("range_start")),
        range_end=ipam.get("rangeEnd", ipam.get("range_end")),
    )
