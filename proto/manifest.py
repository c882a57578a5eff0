"""One entry for every manifest: KubeVirt YAML/JSON or virtbus's native JSON, parsed and validated."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import yaml

from proto.errors import ApiError, Code
from proto.kubevirt import network_from_nad, vm_from_kubevirt
from proto.spec import NetworkAttachment, VMSpec
from proto.validation import validate_network, validate_vm

NATIVE_API = "virtbus/v1"
ACCEPTED = ("kubevirt.io/v1 VirtualMachine, k8s.cni.cncf.io/v1 NetworkAttachmentDefinition, "
            f"{NATIVE_API} VirtualMachine or Network")


def parse_manifest(data: bytes) -> VMSpec | NetworkAttachment:
    """JSON (what the API receives) or YAML (what people write), one document."""
    text = data.decode("utf-8", errors="replace")
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith(("{", "[")):
            raise ApiError(Code.BAD_REQUEST, f"malformed JSON: {exc}") from None
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as yexc:
            raise ApiError(Code.BAD_REQUEST, f"malformed JSON/YAML: {yexc}") from None
        if len(docs) != 1:
            raise ApiError(Code.BAD_REQUEST, f"expected one manifest, got {len(docs)}") from None
        obj = docs[0]
    return parse_manifest_obj(obj)


def parse_manifest_obj(obj: object) -> VMSpec | NetworkAttachment:
    if not isinstance(obj, dict):
        raise ApiError(Code.BAD_REQUEST, f"a manifest is an object with apiVersion and kind ({ACCEPTED})")
    api, kind = obj.get("apiVersion"), obj.get("kind")
    if isinstance(api, str) and api.startswith("kubevirt.io/") and kind == "VirtualMachine":
        return vm_from_kubevirt(obj)
    if isinstance(api, str) and api.startswith("k8s.cni.cncf.io/") and kind == "NetworkAttachmentDefinition":
        return network_from_nad(obj)
    if api == NATIVE_API and kind in ("VirtualMachine", "Network"):
        extra = set(obj) - {"apiVersion", "kind", "spec"}
        if extra:
            raise ApiError(Code.BAD_REQUEST, f"unknown field {sorted(extra)[0]!r}", sorted(extra)[0])
        target: type[VMSpec] | type[NetworkAttachment] = VMSpec if kind == "VirtualMachine" else NetworkAttachment
        try:
            spec = msgspec.convert(obj.get("spec"), target)
        except msgspec.ValidationError as exc:
            message = str(exc)
            field = message.split("at `$", 1)[1].rstrip("`").lstrip(".") if "at `$" in message else ""
            raise ApiError(Code.BAD_REQUEST, message, f"spec.{field}" if field else "spec") from None
        if isinstance(spec, VMSpec):
            return validate_vm(spec, {k: f"spec.{k}" for k in (
                "name", "memory", "cpu", "disks", "interfaces", "networks", "volumes", "labels", "nodeSelector",
                "terminationGracePeriodSeconds")})
        return validate_network(spec, prefix="")
    raise ApiError(Code.BAD_REQUEST, f"unsupported apiVersion/kind {api!r}/{kind!r}; accepted: {ACCEPTED}")
