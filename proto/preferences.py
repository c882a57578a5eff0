"""KubeVirt's preferences: a VM's ``spec.preference: {name: ...}`` fills in what the VM left unsaid.

virtbus takes user-defined preferences (kind VirtualMachinePreference or VirtualMachineClusterPreference,
one set of names: virtbus has no namespaces) and ships a few common ones. It honours the fields it has
a meaning for: ``devices.preferredDiskBus``, ``devices.preferredInterfaceModel``, ``devices.preferredRng``,
``cpu.preferredCPUTopology`` (how an instancetype's vCPUs are laid out) and
``preferredTerminationGracePeriodSeconds``. Any other field is refused with its path when the preference
is applied, never dropped.

As in KubeVirt, a preference never overrides the VM: a disk that names its bus keeps it, an interface
that names its model keeps it. It is applied to the manifest (``expand``) before the manifest is
parsed, after the instancetype's size is written in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from proto.errors import ApiError, Code
from proto.schema import check_namespace
from proto.subjects import is_dns1123_label

API_VERSIONS = ("instancetype.kubevirt.io/v1beta1", "instancetype.kubevirt.io/v1alpha2")
KINDS = ("VirtualMachinePreference", "VirtualMachineClusterPreference")
DISK_BUSES = ("virtio", "sata", "scsi")
INTERFACE_MODELS = ("virtio", "e1000")
# KubeVirt's v1beta1 spellings, and the older prefer* ones it still takes
TOPOLOGIES = {"sockets": "sockets", "cores": "cores", "threads": "threads",
              "preferSockets": "sockets", "preferCores": "cores", "preferThreads": "threads"}
MAX_GRACE_SECONDS = 3600
Topology = Literal["sockets", "cores", "threads"]


class Preference(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True,
                 forbid_unknown_fields=True):
    name: str
    kind: str = "VirtualMachineClusterPreference"
    preferred_disk_bus: Literal["virtio", "sata", "scsi"] | None = None
    preferred_interface_model: Literal["virtio", "e1000"] | None = None
    preferred_rng: bool = False  # an entropy device (``rng: {}``) unless the VM says otherwise
    preferred_cpu_topology: Topology | None = None
    preferred_termination_grace_period_seconds: int | None = None
    common: bool = False  # shipped with virtbus; cannot be replaced or deleted


def _common(name: str, **fields: Any) -> Preference:
    return Preference(name=name, common=True, **fields)


# From KubeVirt's common-preferences, the part virtbus honours: paravirtual devices for guests with
# virtio drivers, emulated ones for guests without; an entropy device where KubeVirt's gives one
COMMON: dict[str, Preference] = {p.name: p for p in (
    _common("cirros", preferred_disk_bus="virtio", preferred_interface_model="virtio"),
    _common("fedora", preferred_disk_bus="virtio", preferred_interface_model="virtio",
            preferred_cpu_topology="sockets", preferred_rng=True),
    _common("ubuntu", preferred_disk_bus="virtio", preferred_interface_model="virtio",
            preferred_cpu_topology="sockets", preferred_rng=True),
    _common("legacy", preferred_disk_bus="sata", preferred_interface_model="e1000"),
)}


def is_preference(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("kind") in KINDS


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def _only(obj: Mapping[str, Any], keys: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            raise _invalid(where, f"{where} is not supported by virtbus")


def _section(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"spec.{key} must be an object", f"spec.{key}")
    return value


def _choice(value: object, allowed: tuple[str, ...], path: str) -> Any:
    if value is not None and value not in allowed:
        raise _invalid(path, f"{path} {value!r} is not supported by virtbus (supported: {', '.join(allowed)})")
    return value


def parse(obj: Mapping[str, Any]) -> Preference:
    """A preference manifest as KubeVirt users write it."""
    if obj.get("apiVersion") not in API_VERSIONS:
        raise ApiError(Code.BAD_REQUEST, f"apiVersion {obj.get('apiVersion')!r} is not supported: use "
                                         f"{' or '.join(API_VERSIONS)}", "apiVersion")
    _only(obj, ("apiVersion", "kind", "metadata", "spec", "status"), "")
    meta, spec = obj.get("metadata"), obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise ApiError(Code.BAD_REQUEST, "a preference needs metadata.name and spec", "spec")
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.BAD_REQUEST, "metadata.name is required", "metadata.name")
    if obj.get("kind") == KINDS[0]:  # the namespaced kind; the cluster-wide one has none
        check_namespace(meta)
    if not is_dns1123_label(name.replace(".", "-")):
        raise _invalid("metadata.name", f"{name[:64]!r} is not a preference name")
    if name in COMMON:
        raise ApiError(Code.ALREADY_EXISTS, f"{name} is one of virtbus's common preferences", "metadata.name")
    _only(spec, ("devices", "cpu", "preferredTerminationGracePeriodSeconds"), "spec")
    devices, cpu = _section(spec, "devices"), _section(spec, "cpu")
    _only(devices, ("preferredDiskBus", "preferredInterfaceModel", "preferredRng"), "spec.devices")
    rng = devices.get("preferredRng")
    if rng is not None and rng != {}:
        raise _invalid("spec.devices.preferredRng", "spec.devices.preferredRng is {} (an entropy device), "
                                                    "with no fields virtbus supports")
    _only(cpu, ("preferredCPUTopology",), "spec.cpu")
    topology = cpu.get("preferredCPUTopology")
    if topology is not None and topology not in TOPOLOGIES:
        raise _invalid("spec.cpu.preferredCPUTopology", f"spec.cpu.preferredCPUTopology {topology!r} is not "
                       f"supported by virtbus (supported: {', '.join(TOPOLOGIES)})")
    grace = spec.get("preferredTerminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)
                              or not 0 <= grace <= MAX_GRACE_SECONDS):
        raise _invalid("spec.preferredTerminationGracePeriodSeconds",
                       f"spec.preferredTerminationGracePeriodSeconds is 0 to {MAX_GRACE_SECONDS} seconds")
    return Preference(
        name=name, kind=str(obj["kind"]),
        preferred_disk_bus=_choice(devices.get("preferredDiskBus"), DISK_BUSES, "spec.devices.preferredDiskBus"),
        preferred_interface_model=_choice(devices.get("preferredInterfaceModel"), INTERFACE_MODELS,
                                          "spec.devices.preferredInterfaceModel"),
        preferred_rng=rng is not None,
        preferred_cpu_topology=TOPOLOGIES[topology] if topology is not None else None,  # type: ignore[arg-type]
        preferred_termination_grace_period_seconds=grace)


def check(key: str, value: Preference) -> None:
    """A stored preference, held to the rules it was applied with."""
    if key != value.name or not is_dns1123_label(key.replace(".", "-")) or value.common or value.kind not in KINDS:
        raise _invalid("key", f"preference {key!r} is not a user-defined one virtbus could have stored")
    grace = value.preferred_termination_grace_period_seconds
    if grace is not None and not 0 <= grace <= MAX_GRACE_SECONDS:
        raise _invalid("preferredTerminationGracePeriodSeconds", f"0 to {MAX_GRACE_SECONDS} seconds")


def expand(manifest: object, lookup: Callable[[str], Preference | None]) -> object:
    """A VirtualMachine manifest with its preference applied where the VM said nothing itself; any
    other manifest as it is. Refuses an unknown preference."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("spec"), dict):
        return manifest
    ref = manifest["spec"].get("preference")
    if ref is None:
        return manifest
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise ApiError(Code.BAD_REQUEST, "spec.preference is {name: ..., kind: ...}", "spec.preference")
    _only(ref, ("name", "kind", "revisionName", "inferFromVolume"), "spec.preference")
    if "inferFromVolume" in ref:
        raise _invalid("spec.preference.inferFromVolume", "spec.preference.inferFromVolume is not supported by virtbus")
    if ref.get("kind", KINDS[1]) not in KINDS:
        raise _invalid("spec.preference.kind", f"spec.preference.kind is one of {', '.join(KINDS)}")
    found = lookup(ref["name"])
    if found is None:
        raise _invalid("spec.preference.name", f"preference {ref['name']!r} does not exist (virtbus preference list)")
    out = copy.deepcopy(manifest)
    tspec = out["spec"].get("template", {}).get("spec")
    if not isinstance(tspec, dict) or not isinstance(tspec.get("domain"), dict):
        return out  # the conversion says what is missing
    domain = tspec["domain"]
    devices = domain.get("devices") if isinstance(domain.get("devices"), dict) else {}
    if found.preferred_disk_bus is not None:
        for disk in devices.get("disks") or []:
            if isinstance(disk, dict) and not (isinstance(disk.get("disk"), dict) and "bus" in disk["disk"]):
                disk["disk"] = {**(disk.get("disk") or {}), "bus": found.preferred_disk_bus}
    if found.preferred_interface_model is not None:
        for iface in devices.get("interfaces") or []:
            if isinstance(iface, dict) and "model" not in iface:
                iface["model"] = found.preferred_interface_model
    if found.preferred_rng and "rng" not in devices:
        domain["devices"] = {**devices, "rng": {}}
    grace = found.preferred_termination_grace_period_seconds
    if grace is not None and "terminationGracePeriodSeconds" not in tspec:
        tspec["terminationGracePeriodSeconds"] = grace
    cpu = domain.get("cpu")
    # an instancetype's vCPUs (proto.instancetypes writes them as sockets) laid out as preferred
    if found.preferred_cpu_topology and "instancetype" in out["spec"] and isinstance(cpu, dict) \
            and set(cpu) == {"sockets"}:
        domain["cpu"] = {found.preferred_cpu_topology: cpu["sockets"]}
    return out


class PreferenceReply(msgspec.Struct, frozen=True, kw_only=True):
    item: Preference


class PreferenceList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Preference]
