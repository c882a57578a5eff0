"""KubeVirt's instancetypes: a VM's ``spec.instancetype: {name: u1.small}`` sizes its guest.

virtbus ships a small common set (the ``u1`` series of KubeVirt's common-instancetypes) and takes
user-defined ones (kind VirtualMachineInstancetype or VirtualMachineClusterInstancetype, one set of
names: virtbus has no namespaces). Only ``spec.cpu.guest`` and ``spec.memory.guest`` exist here;
anything else an instancetype carries is refused with its field path.

A VM that names one gets its vCPUs and memory from it when it is applied (``expand``); setting them
in the VM as well is refused, as KubeVirt refuses the conflict. The stored spec keeps the name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from proto.errors import ApiError, Code
from proto.quantity import InvalidQuantity, parse_bytes
from proto.schema import check_namespace
from proto.subjects import is_dns1123_label

API_VERSIONS = ("instancetype.kubevirt.io/v1beta1", "instancetype.kubevirt.io/v1alpha2")
KINDS = ("VirtualMachineInstancetype", "VirtualMachineClusterInstancetype")
MAX_GUEST_CPUS = 64


class Instancetype(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    name: str
    cpus: int
    memory: str
    kind: str = "VirtualMachineClusterInstancetype"
    common: bool = False  # shipped with virtbus; cannot be replaced or deleted


def _u1(name: str, cpus: int, memory: str) -> Instancetype:
    return Instancetype(name=name, cpus=cpus, memory=memory, common=True)


# KubeVirt's common-instancetypes u1 series (general purpose), the sizes a new user reaches for first
COMMON: dict[str, Instancetype] = {t.name: t for t in (
    _u1("u1.nano", 1, "512Mi"), _u1("u1.micro", 1, "1Gi"), _u1("u1.small", 1, "2Gi"),
    _u1("u1.medium", 1, "4Gi"), _u1("u1.2xmedium", 2, "4Gi"), _u1("u1.large", 2, "8Gi"),
    _u1("u1.xlarge", 4, "16Gi"), _u1("u1.2xlarge", 8, "32Gi"),
)}


def is_instancetype(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("kind") in KINDS


def parse(obj: Mapping[str, Any]) -> Instancetype:
    """An instancetype manifest as KubeVirt users write it."""
    if obj.get("apiVersion") not in API_VERSIONS:
        raise ApiError(Code.BAD_REQUEST, f"apiVersion {obj.get('apiVersion')!r} is not supported: use "
                                         f"{' or '.join(API_VERSIONS)}", "apiVersion")
    for key in obj:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            raise ApiError(Code.INVALID, f"{key} is not supported by virtbus", str(key))
    meta, spec = obj.get("metadata"), obj.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise ApiError(Code.BAD_REQUEST, "an instancetype needs metadata.name and spec", "spec")
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.BAD_REQUEST, "metadata.name is required", "metadata.name")
    if obj.get("kind") == KINDS[0]:  # the namespaced kind; the cluster-wide one has none
        check_namespace(meta)
    if not is_dns1123_label(name.replace(".", "-")):  # u1.small: dots, as KubeVirt's names have
        raise ApiError(Code.INVALID, f"{name[:64]!r} is not an instancetype name", "metadata.name")
    for key in spec:
        if key not in ("cpu", "memory"):
            raise ApiError(Code.INVALID, f"spec.{key} is not supported by virtbus", f"spec.{key}")
    guest_cpus, guest_memory = _guest(spec, "cpu"), _guest(spec, "memory")
    if isinstance(guest_cpus, bool) or not isinstance(guest_cpus, int) or not 1 <= guest_cpus <= MAX_GUEST_CPUS:
        raise ApiError(Code.INVALID, f"spec.cpu.guest is a number of vCPUs from 1 to {MAX_GUEST_CPUS}",
                       "spec.cpu.guest")
    try:
        parse_bytes(str(guest_memory))
    except InvalidQuantity as exc:
        raise ApiError(Code.INVALID, f"spec.memory.guest: {exc}", "spec.memory.guest") from None
    if name in COMMON:
        raise ApiError(Code.ALREADY_EXISTS, f"{name} is one of virtbus's common instancetypes", "metadata.name")
    return Instancetype(name=name, cpus=guest_cpus, memory=str(guest_memory), kind=str(obj["kind"]))


def _guest(spec: Mapping[str, Any], part: str) -> object:
    value = spec.get(part)
    if not isinstance(value, Mapping) or "guest" not in value:
        raise ApiError(Code.INVALID, f"spec.{part}.guest is required", f"spec.{part}.guest")
    for key in value:
        if key != "guest":
            raise ApiError(Code.INVALID, f"spec.{part}.{key} is not supported by virtbus", f"spec.{part}.{key}")
    return value["guest"]


def expand(manifest: object, lookup: Callable[[str], Instancetype | None]) -> object:
    """A VirtualMachine manifest with its instancetype's size written into its template, as KubeVirt
    applies it; any other manifest as it is. Refuses an unknown instancetype, a preference (not
    a size set both ways; a preference is proto.preferences' to apply."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("spec"), dict):
        return manifest
    spec = manifest["spec"]
    ref = spec.get("instancetype")
    if ref is None:
        return manifest
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise ApiError(Code.BAD_REQUEST, "spec.instancetype is {name: ..., kind: ...}", "spec.instancetype")
    for key in ref:
        if key not in ("name", "kind", "revisionName", "inferFromVolume"):
            raise ApiError(Code.INVALID, f"spec.instancetype.{key} is not supported by virtbus",
                           f"spec.instancetype.{key}")
    if "inferFromVolume" in ref:
        raise ApiError(Code.INVALID, "spec.instancetype.inferFromVolume is not supported by virtbus",
                       "spec.instancetype.inferFromVolume")
    kind = ref.get("kind", "VirtualMachineClusterInstancetype")
    if kind not in KINDS:
        raise ApiError(Code.INVALID, f"spec.instancetype.kind is one of {', '.join(KINDS)}", "spec.instancetype.kind")
    found = lookup(ref["name"])
    if found is None:
        raise ApiError(Code.INVALID, f"instancetype {ref['name']!r} does not exist (virtbus instancetype list)",
                       "spec.instancetype.name")
    out = copy.deepcopy(manifest)
    domain = out["spec"].get("template", {}).get("spec", {}).get("domain")
    if not isinstance(domain, dict):
        return out  # the conversion says what is missing
    path = "spec.template.spec.domain"
    # as KubeVirt blames them (memory.guest, not a memory: {} that says nothing of size)
    for key, sub in (("cpu", None), ("memory", "guest"), ("resources", "requests"), ("resources", "limits")):
        if key in domain and (sub is None or sub in (domain.get(key) or {})):
            where = f"{path}.{key}" + (f".{sub}" if sub else "")
            raise ApiError(Code.INVALID, f"{where} conflicts with instancetype {found.name}, which sizes the guest",
                           where)
    domain["cpu"] = {"sockets": found.cpus}  # KubeVirt's default topology: one vCPU per socket
    domain["memory"] = {"guest": found.memory}
    return out
