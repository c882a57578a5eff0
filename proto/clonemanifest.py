"""KubeVirt's VirtualMachineClone manifest (clone.kubevirt.io/v1beta1 or v1alpha1), as ``virtbus
apply -f`` takes it and ``virtbus create clone`` prints it: what virtbus honours becomes the API's
request (proto.clones.CloneCreate); anything else is refused with its field's full path."""

from __future__ import annotations

from typing import Any

from proto import crdmanifest, labelfilter
from proto.clones import PREFIX_TARGET_NAME, RANDOMIZE_NAMES, SOURCE_SNAPSHOT, SOURCE_VM, CloneCreate
from proto.crdmanifest import envelope
from proto.errors import ApiError, Code
from proto.validation import check_name

KIND = "VirtualMachineClone"
API_VERSION = "clone.kubevirt.io/v1beta1"
API_VERSIONS = frozenset({API_VERSION, "clone.kubevirt.io/v1alpha1"})
_GROUPS = {SOURCE_VM: "kubevirt.io", SOURCE_SNAPSHOT: "snapshot.kubevirt.io"}


def _ref(value: Any, field: str, kinds: tuple[str, ...]) -> tuple[str, str]:
    ref = crdmanifest.obj(value, field)
    crdmanifest.only(ref, {"apiGroup", "kind", "name"}, field)
    kind = ref.get("kind", SOURCE_VM)
    if kind not in kinds:
        raise ApiError(Code.INVALID, f"{field}.kind is one of {', '.join(kinds)}", f"{field}.kind")
    if ref.get("apiGroup", _GROUPS[kind]) != _GROUPS[kind]:
        raise ApiError(Code.INVALID, f"a {kind} is of apiGroup {_GROUPS[kind]}", f"{field}.apiGroup")
    name = ref.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.INVALID, f"{field}.name is required", f"{field}.name")
    check_name(name, f"{field}.name")
    return kind, name


def _filters(spec: dict[str, Any], key: str, field: str) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(Code.INVALID, f"{field} is a list of strings", field)
    labelfilter.check(value, field)
    return value


def parse(doc: Any) -> CloneCreate:
    obj, name, spec = envelope(doc, API_VERSIONS)
    if obj.get("kind") != KIND:
        raise ApiError(Code.INVALID, f"kind must be {KIND}", "kind")
    # patches: JSON patches of the target, which virtbus does not apply
    crdmanifest.only(spec, {"source", "target", "labelFilters", "annotationFilters", "template", "newMacAddresses",
                 "newSMBiosSerial", "volumeNamePolicy"}, "spec")
    source_kind, source = _ref(spec.get("source"), "spec.source", (SOURCE_VM, SOURCE_SNAPSHOT))
    target = None
    if spec.get("target") is not None:
        target = _ref(spec["target"], "spec.target", (SOURCE_VM,))[1]
    template = crdmanifest.obj(spec.get("template", {}), "spec.template")
    crdmanifest.only(template, {"labelFilters", "annotationFilters"}, "spec.template")
    # the template's annotations: virtbus keeps none of a VM template's, so there is nothing to filter
    _filters(template, "annotationFilters", "spec.template.annotationFilters")
    macs = crdmanifest.obj(spec.get("newMacAddresses", {}), "spec.newMacAddresses")
    for iface, mac in macs.items():
        if not isinstance(mac, str):
            raise ApiError(Code.INVALID, "a MAC address is a string", f"spec.newMacAddresses.{iface}")
    serial = spec.get("newSMBiosSerial")
    if serial is not None and not isinstance(serial, str):
        raise ApiError(Code.INVALID, "spec.newSMBiosSerial is a string", "spec.newSMBiosSerial")
    policy = spec.get("volumeNamePolicy", RANDOMIZE_NAMES)
    if policy not in (RANDOMIZE_NAMES, PREFIX_TARGET_NAME):
        raise ApiError(Code.INVALID, f"spec.volumeNamePolicy is {RANDOMIZE_NAMES} or {PREFIX_TARGET_NAME}",
                       "spec.volumeNamePolicy")
    return CloneCreate(name=name, source=source, source_kind=source_kind, target=target,
                       label_filters=_filters(spec, "labelFilters", "spec.labelFilters"),
                       annotation_filters=_filters(spec, "annotationFilters", "spec.annotationFilters"),
                       template_label_filters=_filters(template, "labelFilters", "spec.template.labelFilters"),
                       new_mac_addresses=macs, new_smbios_serial=serial, volume_name_policy=policy)


def manifest(req: CloneCreate) -> dict[str, Any]:
    """The VirtualMachineClone manifest of a request, as ``virtctl create clone`` prints one."""
    spec: dict[str, Any] = {"source": {"apiGroup": _GROUPS[req.source_kind], "kind": req.source_kind,
                                       "name": req.source}}
    if req.target is not None:
        spec["target"] = {"apiGroup": _GROUPS[SOURCE_VM], "kind": SOURCE_VM, "name": req.target}
    for key, value in (("labelFilters", req.label_filters), ("annotationFilters", req.annotation_filters)):
        if value is not None:
            spec[key] = value
    if req.template_label_filters is not None:
        spec["template"] = {"labelFilters": req.template_label_filters}
    if req.new_mac_addresses:
        spec["newMacAddresses"] = dict(req.new_mac_addresses)
    if req.new_smbios_serial is not None:
        spec["newSMBiosSerial"] = req.new_smbios_serial
    if req.volume_name_policy != RANDOMIZE_NAMES:
        spec["volumeNamePolicy"] = req.volume_name_policy
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": req.name}, "spec": spec}
