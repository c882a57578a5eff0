"""KubeVirt's workload kinds: VirtualMachineInstanceReplicaSet (kubevirt.io/v1) keeps N instances
of a VMI template, VirtualMachinePool (pool.kubevirt.io) N VMs of a VM template, each with its own
volumes. What is stored, the manifests as users write them (refused with the field's path where
virtbus cannot honour them), and the API's messages for them.

Members belong to their set by an owner field (Kubernetes' ownerReferences), not by a label query:
the selector is checked against the template's labels, as Kubernetes checks it, and kept for people.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec

from proto import kubevirt, selector
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.manifest import parse_instance_obj
from proto.schema import check_namespace
from proto.selector import LabelSelector
from proto.spec import PersistentVolumeClaim, VMSpec
from proto.state import State
from proto.subjects import is_dns1123_label
from proto.validation import check_name, validate_vm

RS_KIND = "VirtualMachineInstanceReplicaSet"
POOL_KIND = "VirtualMachinePool"
POOL_API_VERSIONS = ("pool.kubevirt.io/v1alpha1", "pool.kubevirt.io/v1beta1")
MAX_REPLICAS = 100
SUFFIX = 5  # an instance is <set>-<5 of a-z0-9>, as Kubernetes' generateName makes them
MAX_RS_NAME = 63 - 1 - SUFFIX
# Kubernetes' generateName alphabet: no vowels (no words), no 0/1/3 (no look-alikes)
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_POOL_NAME = 63 - 1 - len(str(MAX_REPLICAS - 1))
_IGNORED_META = ("namespace", "annotations", "uid", "resourceVersion", "creationTimestamp", "generation",
                 "managedFields", "selfLink", "finalizers", "labels")


class ReplicaSet(State, frozen=True):
    name: str
    replicas: int
    selector: LabelSelector
    template: VMSpec  # a VMI spec (run once); each instance gets its own name
    created_at: float = 0.0


class Pool(State, frozen=True):
    name: str
    replicas: int
    selector: LabelSelector
    template: VMSpec  # a VM spec; each VM gets its own name and its own volumes
    created_at: float = 0.0


class WorkloadStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    replicas: int  # members that count (not failed, not being deleted)
    ready_replicas: int  # of them, Running (a pool: its VM's instance Running)


class ReplicaSetView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    replica_set: ReplicaSet
    status: WorkloadStatus
    members: list[str] = []


class PoolView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pool: Pool
    status: WorkloadStatus
    members: list[str] = []


class ReplicaSetReply(msgspec.Struct, frozen=True, kw_only=True):
    item: ReplicaSetView


class ReplicaSetList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ReplicaSetView]


class PoolReply(msgspec.Struct, frozen=True, kw_only=True):
    item: PoolView


class PoolList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PoolView]


class ScaleRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    name: str
    replicas: int


def check_replicas(replicas: object, field: str) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise ApiError(Code.INVALID, f"{field} is a number of replicas from 0 to {MAX_REPLICAS}", field)
    return replicas


# --- manifests --------------------------------------------------------------------------------------
def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"{path} must be an object", path)
    return value


def _only(obj: Mapping[str, Any], keys: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            raise ApiError(Code.INVALID, f"{where} is not supported by virtbus", where)


def _header(obj: object, versions: tuple[str, ...], kind: str, max_name: int) -> tuple[str, Mapping[str, Any]]:
    """The name and spec of a set's manifest, after its apiVersion, kind and metadata."""
    doc = _object(obj, "")
    if doc.get("apiVersion") not in versions:
        raise ApiError(Code.BAD_REQUEST, f"apiVersion {doc.get('apiVersion')!r} is not supported for {kind}: use "
                                         f"{' or '.join(versions)}", "apiVersion")
    if doc.get("kind") != kind:
        raise ApiError(Code.BAD_REQUEST, f"a {kind} manifest is expected", "kind")
    _only(doc, ("apiVersion", "kind", "metadata", "spec", "status"), "")
    meta = _object(doc.get("metadata"), "metadata")
    _only(meta, ("name", *_IGNORED_META), "metadata")
    check_namespace(meta)
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.BAD_REQUEST, "metadata.name is required", "metadata.name")
    check_name(name, "metadata.name", f"{kind} name")
    if len(name) > max_name:
        raise ApiError(Code.INVALID, f"a {kind} name is at most {max_name} characters: its members' names add to it",
                       "metadata.name")
    return name, _object(doc.get("spec"), "spec")


def _template_meta(template: Mapping[str, Any], path: str, chosen: LabelSelector) -> dict[str, Any]:
    """The template's metadata as its members get it: its labels (which the selector must select) and
    its annotations (virtbus.io/high-availability among them: read by the member's own parsing)."""
    meta = _object(template.get("metadata") or {}, f"{path}.metadata")
    _only(meta, ("labels", "name", "annotations", "creationTimestamp"), f"{path}.metadata")
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
        raise ApiError(Code.BAD_REQUEST, f"{path}.metadata.labels must map strings to strings",
                       f"{path}.metadata.labels")
    check_labels(dict(labels), f"{path}.metadata.labels")
    if not chosen.matches(labels):
        raise ApiError(Code.INVALID, "`selector` does not match template `labels`", f"{path}.metadata.labels")
    return {"labels": dict(labels), **({"annotations": meta["annotations"]} if meta.get("annotations") else {})}


def _no_shared_volumes(spec: VMSpec, volumes_path: str, own: set[str]) -> None:
    # one volume is one qcow2 file: two guests writing it would corrupt it
    for index, volume in enumerate(spec.volumes):
        if isinstance(volume.source, PersistentVolumeClaim) and volume.source.claim_name not in own:
            raise ApiError(Code.INVALID, "every member would use the same volume, and a virtbus volume takes one "
                                         "writer: give each its own with dataVolumeTemplates (VirtualMachinePool)",
                           f"{volumes_path}[{index}]")


def parse_replicaset(obj: object) -> ReplicaSet:
    name, spec = _header(obj, kubevirt.VM_API_VERSIONS, RS_KIND, MAX_RS_NAME)
    _only(spec, ("replicas", "selector", "template"), "spec")
    replicas = check_replicas(spec.get("replicas", 1), "spec.replicas")
    chosen = selector.parse(spec.get("selector"), "spec.selector")
    template = _object(spec.get("template"), "spec.template")
    _only(template, ("metadata", "spec"), "spec.template")
    instance = {"apiVersion": kubevirt.VM_API_VERSIONS[0], "kind": "VirtualMachineInstance",
                "metadata": {"name": name, **_template_meta(template, "spec.template", chosen)},
                "spec": template.get("spec")}
    try:
        vmi = parse_instance_obj(instance)
    except ApiError as err:
        field = err.field if err.field is None or err.field == "metadata.name" else f"spec.template.{err.field}"
        message = err.message.replace("spec.", "spec.template.spec.") if err.field != "metadata.name" else err.message
        raise ApiError(err.code, message, field) from None
    _no_shared_volumes(vmi, "spec.template.spec.volumes", set())
    return ReplicaSet(name=name, replicas=replicas, selector=chosen, template=vmi)


def pool_vm_manifest(obj: object) -> tuple[str, int, LabelSelector, dict[str, Any]]:
    """(name, replicas, selector, the VirtualMachine manifest of its template): the API expands and
    parses that as it does any VM's (instancetypes, preferences), then ``pool_template`` checks it."""
    name, spec = _header(obj, POOL_API_VERSIONS, POOL_KIND, MAX_POOL_NAME)
    _only(spec, ("replicas", "selector", "virtualMachineTemplate"), "spec")
    replicas = check_replicas(spec.get("replicas", 1), "spec.replicas")
    chosen = selector.parse(spec.get("selector"), "spec.selector")
    template = _object(spec.get("virtualMachineTemplate"), "spec.virtualMachineTemplate")
    _only(template, ("metadata", "spec"), "spec.virtualMachineTemplate")
    vm = {"apiVersion": kubevirt.VM_API_VERSIONS[0], "kind": "VirtualMachine",
          "metadata": {"name": name, **_template_meta(template, "spec.virtualMachineTemplate", chosen)},
          "spec": template.get("spec")}
    return name, replicas, chosen, vm


def pool_field(field: str | None) -> str | None:
    """Where a field of the template's VirtualMachine is in the pool's manifest."""
    if field is None or field == "metadata.name":
        return field
    return f"spec.virtualMachineTemplate.{field}"


def pool_template(name: str, vm: VMSpec) -> VMSpec:
    """The checked template of a pool's VMs: its volumes are its own, its names fit."""
    own = {t.name for t in vm.data_volume_templates}
    _no_shared_volumes(vm, "spec.virtualMachineTemplate.spec.template.spec.volumes", own)
    longest = len(f"{name}-{MAX_REPLICAS - 1}") + 1
    for index, template in enumerate(vm.data_volume_templates):
        if len(template.name) + longest > 63:
            raise ApiError(Code.INVALID, f"a pool's VM's volume is <name>-<pool>-<index>: {template.name!r} makes "
                                         "that longer than 63 characters",
                           f"spec.virtualMachineTemplate.spec.dataVolumeTemplates[{index}].metadata.name")
    return vm


# --- members ----------------------------------------------------------------------------------------
_MEMBER = re.compile(r"^(?P<set>.+)-(?P<index>0|[1-9][0-9]*)$")


def pool_member(pool: str, index: int) -> str:
    return f"{pool}-{index}"


def pool_index(pool: str, vm: str) -> int | None:
    match = _MEMBER.fullmatch(vm)
    return int(match["index"]) if match and match["set"] == pool else None


def pool_vm_spec(pool: Pool, index: int) -> VMSpec:
    """The spec of a pool's VM number ``index``: its own name, its own volumes (KubeVirt names them
    <template>-<pool>-<index>), the template's volumes pointing at them."""
    vm_name = pool_member(pool.name, index)
    renamed = {t.name: f"{t.name}-{vm_name}" for t in pool.template.data_volume_templates}
    volumes = [msgspec.structs.replace(v, source=PersistentVolumeClaim(claim_name=renamed[v.source.claim_name]))
               if isinstance(v.source, PersistentVolumeClaim) and v.source.claim_name in renamed else v
               for v in pool.template.volumes]
    templates = [msgspec.structs.replace(t, name=renamed[t.name]) for t in pool.template.data_volume_templates]
    return msgspec.structs.replace(pool.template, name=vm_name, volumes=volumes, data_volume_templates=templates)


def generate_name(base: str) -> str:
    """Kubernetes' generateName: <base>-<5 random>, the base cut so the whole is a DNS-1123 label."""
    return base[:MAX_RS_NAME].rstrip("-") + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(SUFFIX))


def check_replicaset(key: str, rs: ReplicaSet) -> None:
    _check_set(key, rs.name, rs.replicas, rs.selector, MAX_RS_NAME)
    validate_vm(rs.template)
    if rs.template.name != rs.name or not rs.selector.matches(rs.template.labels):
        raise ApiError(Code.INVALID, "the template is not this replica set's", "template")


def check_pool(key: str, pool: Pool) -> None:
    _check_set(key, pool.name, pool.replicas, pool.selector, MAX_POOL_NAME)
    validate_vm(pool.template)
    if pool.template.name != pool.name:
        raise ApiError(Code.INVALID, "the template is not this pool's", "template")


def _check_set(key: str, name: str, replicas: int, chosen: LabelSelector, max_name: int) -> None:
    check_name(key, "key")
    if key != name or len(name) > max_name or not is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"the key {key!r} is not the name {name!r} it holds", "key")
    check_replicas(replicas, "replicas")
    selector.check(chosen, "selector")
