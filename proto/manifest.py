"""One entry for every manifest: KubeVirt YAML/JSON or virtbus's native form, parsed and validated.

Accepted: kubevirt.io/v1 (or v1alpha3) VirtualMachine and k8s.cni.cncf.io/v1 NetworkAttachmentDefinition
(proto.kubevirt), and virtbus/v1 ``VirtualMachine`` or ``Network`` whose ``spec`` is a proto.spec.VMSpec or
NetworkAttachment, decoded strictly. The API receives JSON; YAML is for files people write.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import yaml

from proto import fencing, kubevirt
from proto.errors import ApiError, Code
from proto.spec import NetworkAttachment, VMSpec
from proto.validation import validate_network, validate_vm

NATIVE_API = "virtbus/v1"
ACCEPTED = ("kubevirt.io/v1 VirtualMachine, k8s.cni.cncf.io/v1 NetworkAttachmentDefinition, "
            f"{NATIVE_API} VirtualMachine or {NATIVE_API} Network")
MAX_MANIFEST = 1024 * 1024
MAX_DEPTH = 64
# libyaml's safe loader when PyYAML was built with it: the same documents, several times faster
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONTENT_TYPES = {
    "auto": "auto", "json": "json", "application/json": "json",
    "yaml": "yaml", "application/yaml": "yaml", "application/x-yaml": "yaml", "text/yaml": "yaml",
}
_NATIVE: dict[str, type[VMSpec] | type[NetworkAttachment]] = {"VirtualMachine": VMSpec, "Network": NetworkAttachment}
_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]+)`")

Manifest = VMSpec | NetworkAttachment


def _bad(message: str, field: str | None = None) -> ApiError:
    return ApiError(Code.BAD_REQUEST, message, field)


def parse_manifest(data: bytes, *, content_type: str = "auto") -> Manifest:
    """Parse one manifest (JSON, or YAML with a single document) and validate it."""
    return parse_manifest_obj(load_manifest(data, content_type=content_type))


def load_manifest(data: bytes, *, content_type: str = "auto") -> object:
    """The one document in ``data`` as plain objects; ``content_type`` is auto, json or yaml."""
    documents = load_manifests(data, content_type=content_type)
    if len(documents) != 1:
        raise _bad("the YAML holds no manifest" if not documents else
                   f"the YAML holds {len(documents)} documents separated by ---; send one manifest at a time")
    return documents[0]


def load_manifests(data: bytes, *, content_type: str = "auto") -> list[object]:
    """Every document in ``data`` (a file people wrote, ``---`` between YAML documents), loaded with the
    same limits: size, no aliases, bounded depth."""
    form = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
    if form is None:
        raise _bad(f"content type {content_type!r} is not supported: send JSON or YAML")
    if len(data) > MAX_MANIFEST:
        raise _bad(f"a manifest is at most {MAX_MANIFEST // 1024} KiB; this one is {len(data) // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(f"a manifest is UTF-8 text: {exc}") from None
    if form == "auto":
        form = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    try:
        return [json.loads(text)] if form == "json" else _load_yaml(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"malformed JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise _bad(f"malformed YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise _bad(f"malformed {form.upper()}: nested too deeply") from None


def _load_yaml(text: str) -> list[object]:
    # Checked on the event stream, before anything is built: aliases make a small document a huge tree
    # (billion laughs), and deep nesting costs the scanner dearly (quadratically, in pure Python). Manifests
    # need neither.
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise _bad(f"YAML aliases (*name) are not accepted in a manifest{_line(event)}")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _bad(f"malformed YAML: nested deeper than {MAX_DEPTH}{_line(event)}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]


def _line(event: yaml.Event) -> str:
    return f" (line {event.start_mark.line + 1})" if event.start_mark is not None else ""


def parse_manifest_obj(obj: object) -> Manifest:
    """Dispatch an already parsed manifest on apiVersion and kind, convert it and validate it."""
    if not isinstance(obj, dict):
        raise _bad(f"a manifest is an object with apiVersion and kind; accepted: {ACCEPTED}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if isinstance(api_version, str) and api_version.startswith(kubevirt.API_GROUPS):
        converted = kubevirt.from_kubevirt(obj)
        try:
            return _validate(converted)
        except ApiError as err:
            raise ApiError(err.code, err.message, kubevirt_field(err.field, obj)) from None
    if api_version == NATIVE_API:
        return _validate(_native(obj, kind))
    raise _bad(f"apiVersion {api_version!r} kind {kind!r} is not accepted; accepted: {ACCEPTED}", "apiVersion")


INSTANCE_KIND = "VirtualMachineInstance"


def parse_instance(data: bytes, *, content_type: str = "auto") -> VMSpec:
    return parse_instance_obj(load_manifest(data, content_type=content_type))


def parse_instance_obj(obj: object) -> VMSpec:
    """A KubeVirt VirtualMachineInstance: its spec is a VM's ``spec.template.spec``, so it is read as
    the VM that would make it, and errors name the field where the user wrote it."""
    if not isinstance(obj, dict) or obj.get("kind") != INSTANCE_KIND:
        raise _bad(f"a {INSTANCE_KIND} manifest is expected", "kind")
    if obj.get("apiVersion") not in kubevirt.VM_API_VERSIONS:
        raise _bad(f"apiVersion {obj.get('apiVersion')!r} is not supported: use "
                   f"{' or '.join(kubevirt.VM_API_VERSIONS)}", "apiVersion")
    for key in obj:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            raise ApiError(Code.INVALID, f"{key} is not supported by virtbus", str(key))
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _bad("metadata must be an object with a name", "metadata")
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict) and annotations.get(fencing.ANNOTATION) == "true":
        raise ApiError(Code.INVALID, f"a {INSTANCE_KIND} runs once and is not run again elsewhere: put "
                                     f"{fencing.ANNOTATION} on a VirtualMachine",
                       f"metadata.annotations.{fencing.ANNOTATION}")
    template_meta = {"labels": meta["labels"]} if "labels" in meta else {}
    as_vm = {"apiVersion": obj["apiVersion"], "kind": "VirtualMachine",
             "metadata": {k: v for k, v in meta.items() if k != "labels"},
             "spec": {"runStrategy": "Once", "template": {"metadata": template_meta, "spec": obj.get("spec")}}}
    try:
        spec = parse_manifest_obj(as_vm)
    except ApiError as err:
        raise ApiError(err.code, instance_path(err.message) or err.message, instance_path(err.field)) from None
    if not isinstance(spec, VMSpec):  # a VirtualMachine always reads as one
        raise _bad(f"not a {INSTANCE_KIND}", "kind")
    return spec


def instance_path(text: str | None) -> str | None:
    """A VM's field path (or a message naming one) as the VirtualMachineInstance it was written as spells it."""
    if text is None:
        return None
    return text.replace("spec.template.spec", "spec").replace("spec.template.metadata", "metadata")


def _validate(manifest: Manifest) -> Manifest:
    match manifest:
        case VMSpec():
            return validate_vm(manifest)
        case NetworkAttachment():
            return validate_network(manifest)


def _native(obj: dict[Any, Any], kind: object) -> Manifest:
    target = _NATIVE.get(kind) if isinstance(kind, str) else None
    if target is None:
        raise _bad(f"kind {kind!r} is not a {NATIVE_API} kind: use {' or '.join(_NATIVE)}", "kind")
    for key in obj:
        if key not in ("apiVersion", "kind", "spec"):
            raise _bad(f"{key} is not a field of a {NATIVE_API} {kind} (apiVersion, kind, spec)", str(key))
    if "spec" not in obj:
        raise _bad("spec is required", "spec")
    try:
        return msgspec.convert(obj["spec"], target)
    except msgspec.ValidationError as exc:
        message, field = _validation_error(str(exc))
        raise _bad(message, field) from None


def _validation_error(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.cpu.cores`" as ("spec.cpu.cores: Expected ...", path)."""
    match = _AT.match(message)
    text, where = (match["text"], match["where"] or "") if match else (message, "")
    field = "spec" + where
    named = _NAMED.match(text)
    if named:
        field = f"{field}.{named['name']}"
    return f"{field}: {text}", field


# --- native field paths (what proto.validation blames) to the KubeVirt manifest's

_VM_FIELDS = {
    "name": "metadata.name",
    "runStrategy": "spec.runStrategy",
    "labels": "spec.template.metadata.labels",
    "vmLabels": "metadata.labels",
    "cpu": f"{kubevirt.DOMAIN_PATH}.cpu",
    "disks": f"{kubevirt.DOMAIN_PATH}.devices.disks",
    "interfaces": f"{kubevirt.DOMAIN_PATH}.devices.interfaces",
    "networks": f"{kubevirt.TEMPLATE_SPEC}.networks",
    "volumes": f"{kubevirt.TEMPLATE_SPEC}.volumes",
    "nodeSelector": f"{kubevirt.TEMPLATE_SPEC}.nodeSelector",
    "terminationGracePeriodSeconds": f"{kubevirt.TEMPLATE_SPEC}.terminationGracePeriodSeconds",
    "hostname": f"{kubevirt.TEMPLATE_SPEC}.hostname",
    "subdomain": f"{kubevirt.TEMPLATE_SPEC}.subdomain",
    "firmware": f"{kubevirt.DOMAIN_PATH}.firmware",
    "clock": f"{kubevirt.DOMAIN_PATH}.clock",
    "features": f"{kubevirt.DOMAIN_PATH}.features",
    "rng": f"{kubevirt.DOMAIN_PATH}.devices.rng",
    "inputs": f"{kubevirt.DOMAIN_PATH}.devices.inputs",
    "readinessProbe": f"{kubevirt.TEMPLATE_SPEC}.readinessProbe",
    "livenessProbe": f"{kubevirt.TEMPLATE_SPEC}.livenessProbe",
    "evictionStrategy": f"{kubevirt.TEMPLATE_SPEC}.evictionStrategy",
    "affinity": f"{kubevirt.TEMPLATE_SPEC}.affinity",
    "tolerations": f"{kubevirt.TEMPLATE_SPEC}.tolerations",
    "topologySpreadConstraints": f"{kubevirt.TEMPLATE_SPEC}.topologySpreadConstraints",
    "dnsPolicy": f"{kubevirt.TEMPLATE_SPEC}.dnsPolicy",
    "dnsConfig": f"{kubevirt.TEMPLATE_SPEC}.dnsConfig",
    "priorityClassName": f"{kubevirt.TEMPLATE_SPEC}.priorityClassName",
}
# whole native paths whose KubeVirt field sits elsewhere than the walk above finds it
_MOVED = {"spec.clock.offsetSeconds": f"{kubevirt.DOMAIN_PATH}.clock.utc.offsetSeconds"}
# item attributes spelled differently; a tuple lists the keys one of which the KubeVirt item holds
_ITEM_FIELDS: dict[tuple[str, str], str | tuple[str, ...]] = {
    ("disks", "bus"): tuple(f"{device}.bus" for device in kubevirt.DISK_DEVICES),  # the one the disk is
    ("interfaces", "binding"): kubevirt.BINDINGS,
    ("networks", "kind"): kubevirt.NETWORK_SOURCES,
    ("networks", "networkName"): "multus.networkName",
    ("volumes", "source"): kubevirt.VOLUME_SOURCES,
}
_NAD_FIELDS = {"spec.name": "metadata.name", "spec.bridge": "spec.config.bridge",
               "spec.subnet": "spec.config.ipam.subnet", "spec.gateway": "spec.config.ipam.gateway",
               "spec.rangeStart": "spec.config.ipam.rangeStart", "spec.rangeEnd": "spec.config.ipam.rangeEnd",
               "spec.vlan": "spec.config.vlan", "spec.type": "spec.config.type"}
_NATIVE_FIELD = re.compile(r"^spec\.(\w+)(?:\[(\d+)\](?:\.(\w+))?)?(.*)$")


def _dig(obj: object, *keys: str | int) -> object:
    for key in keys:
        if isinstance(key, int):
            obj = obj[key] if isinstance(obj, list) and key < len(obj) else None
        else:
            obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def kubevirt_field(field: str | None, obj: dict[Any, Any]) -> str | None:
    """The path in the KubeVirt manifest ``obj`` of a native field path that proto.validation blamed."""
    if field is None:
        return None
    if obj.get("kind") == "NetworkAttachmentDefinition":
        return _NAD_FIELDS.get(field, field)
    if field in _MOVED:
        return _MOVED[field]
    match = _NATIVE_FIELD.match(field)
    if not match:
        return field
    top, index, attr, rest = match.groups()
    domain = _dig(obj, "spec", "template", "spec", "domain")
    if top == "memory":
        for keys in (("resources", "requests", "memory"), ("memory", "guest"), ("resources", "limits", "memory")):
            if _dig(domain, *keys) is not None:
                return ".".join((kubevirt.DOMAIN_PATH, *keys))
        return f"{kubevirt.DOMAIN_PATH}.resources.requests.memory"
    if top not in _VM_FIELDS:
        return field
    if top in ("readinessProbe", "livenessProbe") and rest in (".port", ".path"):  # under its action in KubeVirt's
        action = "httpGet" if _dig(obj, *_VM_FIELDS[top].split("."), "httpGet") is not None else "tcpSocket"
        return f"{_VM_FIELDS[top]}.{action}{rest}"
    if index is None:
        return _VM_FIELDS[top] + rest
    item = f"{_VM_FIELDS[top]}[{index}]"
    if attr is None:
        return item + rest
    renamed = _ITEM_FIELDS.get((top, attr), attr)
    if isinstance(renamed, tuple):
        raw = _dig(obj, *_VM_FIELDS[top].split("."), int(index))
        # the key the item holds ("disk" of "disk.bus"), else the first spelling
        renamed = next((key for key in renamed if isinstance(raw, dict) and key.split(".")[0] in raw),
                       renamed[0] if "." in renamed[0] else attr)
    return f"{item}.{renamed}{rest}"
