"""KubeVirt manifests (kubevirt.io/v1 VirtualMachine, k8s.cni.cncf.io/v1 NetworkAttachmentDefinition)
into virtbus specs, pure. What virtbus cannot honour is refused with the full path of the field.

A small schema of known keys drives the walk: a key missing from it is "not supported by virtbus".
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from proto.errors import ApiError, Code
from proto.spec import (
    CloudInitNoCloud,
    ContainerDisk,
    Cpu,
    Disk,
    EmptyDisk,
    Interface,
    Network,
    NetworkAttachment,
    Port,
    RunStrategy,
    VMSpec,
    Volume,
)
from proto.validation import validate_network, validate_vm

ANY = "any"  # accepted as is, not looked into (labels, annotations, status)
IGNORED = "ignored"  # accepted and without effect here

METADATA = {"name": str, "namespace": str, "labels": ANY, "annotations": ANY, "uid": IGNORED,
            "resourceVersion": IGNORED, "creationTimestamp": IGNORED, "generation": IGNORED,
            "managedFields": IGNORED, "finalizers": IGNORED}
DISK = {"name": str, "disk": {"bus": str}, "bootOrder": int}
INTERFACE = {"name": str, "masquerade": {}, "bridge": {}, "macAddress": str, "model": str,
             "ports": [{"port": int, "protocol": str, "name": str}]}
VOLUME = {"name": str, "containerDisk": {"image": str, "imagePullPolicy": IGNORED},
          "emptyDisk": {"capacity": ANY},
          "cloudInitNoCloud": {"userData": str, "userDataBase64": str, "networkData": str,
                               "networkDataBase64": str}}
VM_SCHEMA: dict[str, Any] = {
    "apiVersion": str, "kind": str, "metadata": METADATA, "status": IGNORED,
    "spec": {
        "running": bool, "runStrategy": str,
        "template": {
            "metadata": {"labels": ANY, "annotations": ANY, "creationTimestamp": IGNORED, "name": IGNORED},
            "spec": {
                "domain": {
                    "cpu": {"cores": int, "sockets": int, "threads": int},
                    "memory": {"guest": ANY},
                    "resources": {"requests": {"memory": ANY, "cpu": IGNORED},
                                  "limits": {"memory": ANY, "cpu": IGNORED}},
                    "devices": {"disks": [DISK], "interfaces": [INTERFACE]},
                },
                "networks": [{"name": str, "pod": {}, "multus": {"networkName": str}}],
                "volumes": [VOLUME],
                "nodeSelector": ANY,
                "terminationGracePeriodSeconds": int,
            },
        },
    },
}
NAD_SCHEMA: dict[str, Any] = {"apiVersion": str, "kind": str, "metadata": METADATA, "spec": {"config": str}}
CNI_SCHEMA: dict[str, Any] = {
    "cniVersion": IGNORED, "name": str, "type": str, "bridge": str, "isGateway": IGNORED, "ipMasq": IGNORED,
    "ipam": {"type": str, "subnet": str, "rangeStart": str, "rangeEnd": str, "gateway": str, "routes": IGNORED},
}


def _type_name(t: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    return names.get(t, "an object")


def check(value: Any, schema: Any, path: str) -> None:
    """Walk value against schema; raise naming the first unsupported or mistyped field."""
    if schema in (ANY, IGNORED):
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ApiError(Code.BAD_REQUEST, f"must be an object, not {type(value).__name__}", path or None)
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in schema:
                raise ApiError(Code.INVALID, f"{sub} is not supported by virtbus", sub)
            check(item, schema[key], sub)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ApiError(Code.BAD_REQUEST, "must be a list", path)
        for i, item in enumerate(value):
            check(item, schema[0], f"{path}[{i}]")
    elif schema is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(Code.BAD_REQUEST, "must be an integer", path)
    elif not isinstance(value, schema):
        raise ApiError(Code.BAD_REQUEST, f"must be {_type_name(schema)}", path)


def _b64(text: str, path: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(Code.INVALID, "is not base64 of UTF-8 text", path) from None


def _quantity(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ApiError(Code.BAD_REQUEST, "must be a quantity like 64M or 1Gi", path)
    return str(value)


T = "spec.template.spec"
D = f"{T}.domain"


def vm_from_kubevirt(doc: dict[str, Any]) -> VMSpec:
    check(doc, VM_SCHEMA, "")
    meta, spec = doc.get("metadata", {}), doc.get("spec", {})
    tmpl = spec.get("template", {})
    tspec = tmpl.get("spec", {})
    domain = tspec.get("domain", {})
    if "name" not in meta:
        raise ApiError(Code.INVALID, "a VirtualMachine needs a name", "metadata.name")
    if "running" in spec and "runStrategy" in spec:
        raise ApiError(Code.INVALID, "running and runStrategy are mutually exclusive", "spec.runStrategy")
    if "runStrategy" in spec:
        try:
            strategy = RunStrategy(spec["runStrategy"])
        except ValueError:
            raise ApiError(Code.INVALID, f"runStrategy {spec['runStrategy']!r} is not supported by virtbus "
                           f"(one of {', '.join(s.value for s in RunStrategy)})", "spec.runStrategy") from None
    else:
        strategy = RunStrategy.ALWAYS if spec.get("running") else RunStrategy.HALTED
    requests = domain.get("resources", {}).get("requests", {})
    if "memory" in requests:
        memory, memory_path = _quantity(requests["memory"], f"{D}.resources.requests.memory"), \
            f"{D}.resources.requests.memory"
    elif "guest" in domain.get("memory", {}):
        memory, memory_path = _quantity(domain["memory"]["guest"], f"{D}.memory.guest"), f"{D}.memory.guest"
    else:
        raise ApiError(Code.INVALID, "set resources.requests.memory or memory.guest", f"{D}.resources.requests.memory")
    devices = domain.get("devices", {})
    disks = [Disk(name=d["name"], bus=_bus(d, f"{D}.devices.disks[{i}].disk.bus"), boot_order=d.get("bootOrder"))
             for i, d in enumerate(devices.get("disks", []))]
    interfaces = [_interface(x, f"{D}.devices.interfaces[{i}]") for i, x in enumerate(devices.get("interfaces", []))]
    networks = [_network(n, f"{T}.networks[{i}]") for i, n in enumerate(tspec.get("networks", []))]
    volumes = [_volume(v, f"{T}.volumes[{i}]") for i, v in enumerate(tspec.get("volumes", []))]
    labels = {**meta.get("labels", {}), **tmpl.get("metadata", {}).get("labels", {})}
    for field, value in (("metadata.labels", labels), (f"{T}.nodeSelector", tspec.get("nodeSelector", {}))):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ApiError(Code.BAD_REQUEST, "must map strings to strings", field)
    cpu = domain.get("cpu", {})
    vm = VMSpec(name=meta["name"], run_strategy=strategy, labels={str(k): str(v) for k, v in labels.items()},
                cpu=Cpu(cores=cpu.get("cores", 1), sockets=cpu.get("sockets", 1), threads=cpu.get("threads", 1)),
                memory=memory, disks=disks, interfaces=interfaces, networks=networks, volumes=volumes,
                node_selector=dict(tspec.get("nodeSelector", {})),
                termination_grace_period_seconds=tspec.get("terminationGracePeriodSeconds", 30))
    return validate_vm(vm, {
        "name": "metadata.name", "memory": memory_path, "cpu": f"{D}.cpu", "disks": f"{D}.devices.disks",
        "interfaces": f"{D}.devices.interfaces", "networks": f"{T}.networks", "volumes": f"{T}.volumes",
        "labels": "metadata.labels", "nodeSelector": f"{T}.nodeSelector",
        "terminationGracePeriodSeconds": f"{T}.terminationGracePeriodSeconds"})


def _bus(disk: dict[str, Any], path: str) -> Any:
    bus = disk.get("disk", {}).get("bus", "virtio")
    if bus not in ("virtio", "sata", "scsi"):
        raise ApiError(Code.INVALID, f"disk bus {bus!r} is not supported by virtbus (virtio, sata, scsi)", path)
    return bus


def _interface(x: dict[str, Any], path: str) -> Interface:
    bindings = [b for b in ("masquerade", "bridge") if b in x]
    if len(bindings) != 1:
        raise ApiError(Code.INVALID, "an interface needs exactly one binding: masquerade or bridge", path)
    model = x.get("model", "virtio")
    if model not in ("virtio", "e1000"):
        raise ApiError(Code.INVALID, f"model {model!r} is not supported by virtbus", f"{path}.model")
    ports = []
    for j, p in enumerate(x.get("ports", [])):
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP"):
            raise ApiError(Code.INVALID, f"protocol {proto!r} is not supported (TCP, UDP)",
                           f"{path}.ports[{j}].protocol")
        if "port" not in p:
            raise ApiError(Code.INVALID, "a port needs a number", f"{path}.ports[{j}].port")
        ports.append(Port(port=p["port"], protocol=proto, name=p.get("name")))
    return Interface(name=x["name"], binding=bindings[0], mac_address=x.get("macAddress"), ports=ports, model=model)


def _network(n: dict[str, Any], path: str) -> Network:
    if ("pod" in n) == ("multus" in n):
        raise ApiError(Code.INVALID, "a network is either pod or multus", path)
    if "multus" in n:
        if "networkName" not in n["multus"]:
            raise ApiError(Code.INVALID, "multus needs a networkName", f"{path}.multus.networkName")
        return Network(name=n["name"], kind="multus", network_name=n["multus"]["networkName"])
    return Network(name=n["name"], kind="pod")


def _volume(v: dict[str, Any], path: str) -> Volume:
    sources = [k for k in ("containerDisk", "emptyDisk", "cloudInitNoCloud") if k in v]
    if len(sources) != 1:
        raise ApiError(Code.INVALID, "a volume needs exactly one source: containerDisk, emptyDisk or cloudInitNoCloud",
                       path)
    kind, body = sources[0], v[sources[0]]
    if kind == "containerDisk":
        if "image" not in body:
            raise ApiError(Code.INVALID, "containerDisk needs an image", f"{path}.containerDisk.image")
        return Volume(name=v["name"], source=ContainerDisk(image=body["image"]))
    if kind == "emptyDisk":
        if "capacity" not in body:
            raise ApiError(Code.INVALID, "emptyDisk needs a capacity", f"{path}.emptyDisk.capacity")
        capacity = _quantity(body["capacity"], f"{path}.emptyDisk.capacity")
        return Volume(name=v["name"], source=EmptyDisk(capacity=capacity))
    user = body.get("userData") or (_b64(body["userDataBase64"], f"{path}.cloudInitNoCloud.userDataBase64")
                                    if "userDataBase64" in body else "")
    net = body.get("networkData") or (_b64(body["networkDataBase64"], f"{path}.cloudInitNoCloud.networkDataBase64")
                                      if "networkDataBase64" in body else None)
    return Volume(name=v["name"], source=CloudInitNoCloud(user_data=user, network_data=net))


def network_from_nad(doc: dict[str, Any]) -> NetworkAttachment:
    check(doc, NAD_SCHEMA, "")
    name = doc.get("metadata", {}).get("name")
    if not name:
        raise ApiError(Code.INVALID, "a NetworkAttachmentDefinition needs a name", "metadata.name")
    try:
        config = json.loads(doc.get("spec", {}).get("config", ""))
    except json.JSONDecodeError as exc:
        raise ApiError(Code.BAD_REQUEST, f"is not JSON: {exc}", "spec.config") from None
    check(config, CNI_SCHEMA, "spec.config")
    if config.get("type") != "bridge":
        raise ApiError(Code.INVALID, f"CNI type {config.get('type')!r} is not supported by virtbus (bridge)",
                       "spec.config.type")
    ipam = config.get("ipam", {})
    if "bridge" not in config or "subnet" not in ipam:
        raise ApiError(Code.INVALID, "a bridge network needs bridge and ipam.subnet", "spec.config")
    if ipam.get("type", "host-local") not in ("host-local", "whereabouts", "static"):
        raise ApiError(Code.INVALID, f"IPAM type {ipam['type']!r} is not supported", "spec.config.ipam.type")
    att = NetworkAttachment(name=name, bridge=config["bridge"], subnet=ipam["subnet"], gateway=ipam.get("gateway"),
                            range_start=ipam.get("rangeStart"), range_end=ipam.get("rangeEnd"))
    return validate_network(att, prefix="")
