"""KubeVirt's MigrationPolicy (``migrations.kubevirt.io/v1alpha1``), pure: settings for the migrations
of the instances it selects, over the cluster's (the KubeVirt CR's ``spec.configuration.migrations``).

A policy selects by the instance's labels (``selectors.virtualMachineInstanceSelector``) and its
namespace's (``selectors.namespaceSelector``; virtbus has the one namespace, ``default``, labelled
``kubernetes.io/metadata.name: default``), every label given having to match. Of the policies that
select an instance, KubeVirt's rule picks one: the one matching the most labels (the instance's
counting before the namespace's on a tie), then the first by name. Its fields override the cluster's
for that migration as it starts; a policy changed later does not touch a migration under way. The
policy's name is on the instance's ``status.migrationState.migrationPolicyName``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from proto.clusterconfig import MAX_TIMEOUT_S, Bandwidth, Between, check_migration_options
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.quantity import format_bytes
from proto.schema import BOOL, CLUSTER_METADATA, IGNORED, STR, Object, Off, Refused, StrMap, check_kind, required
from proto.state import MigrationOptions
from proto.subjects import is_dns1123_label

API_VERSION = "migrations.kubevirt.io/v1alpha1"
KIND = "MigrationPolicy"
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "default"}  # the one namespace's, as Kubernetes labels it
_SELECTORS = Object({"virtualMachineInstanceSelector": StrMap(), "namespaceSelector": StrMap()})
_SPEC = Object({
    "selectors": _SELECTORS,
    "allowAutoConverge": BOOL,
    "bandwidthPerMigration": Bandwidth(),
    "completionTimeoutPerGiB": Between(1, MAX_TIMEOUT_S, "seconds"),
    "allowPostCopy": Off(),
    "maxDowntimeMs": Refused("the pause at the end of a migration is QEMU's default here"),
    "allowWorkloadDisruption": Off(),
})
_MANIFEST = Object({"apiVersion": STR, "kind": STR, "metadata": CLUSTER_METADATA, "spec": _SPEC, "status": IGNORED})


class MigrationPolicy(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True,
                      omit_defaults=True):
    name: str
    vmi_selector: dict[str, str] = {}
    namespace_selector: dict[str, str] = {}
    # unset: the cluster's
    allow_auto_converge: bool | None = None
    bandwidth_per_migration: int | None = None  # bytes a second; 0: no limit
    completion_timeout_per_gib: int | None = None


class MigrationPolicyReply(msgspec.Struct, frozen=True, kw_only=True):
    item: MigrationPolicy


class MigrationPolicyList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[MigrationPolicy]


def is_migration_policy(obj: object) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") == KIND


def parse(obj: Mapping[str, Any]) -> MigrationPolicy:
    """A MigrationPolicy manifest as KubeVirt's users write it; typed errors name the field."""
    check_kind(obj, (API_VERSION,), KIND)
    tree = _MANIFEST.walk(obj, "")
    spec = required(tree, "spec", "")
    selectors = required(spec, "selectors", "spec")  # KubeVirt's: a policy without them selects nothing
    item = MigrationPolicy(
        name=required(tree.get("metadata", {}), "name", "metadata"),
        vmi_selector=selectors.get("virtualMachineInstanceSelector", {}),
        namespace_selector=selectors.get("namespaceSelector", {}),
        allow_auto_converge=spec.get("allowAutoConverge"), bandwidth_per_migration=spec.get("bandwidthPerMigration"),
        completion_timeout_per_gib=spec.get("completionTimeoutPerGiB"))
    check(item, "metadata.name", "spec.selectors.")
    return item


def check(item: MigrationPolicy, name_field: str = "name", prefix: str = "") -> None:
    """A name that is a DNS-1123 label, selectors that are labels, settings the CR could give."""
    if not is_dns1123_label(item.name):
        raise ApiError(Code.INVALID, f"{item.name[:64]!r} must be a DNS-1123 label (lowercase letters, digits and "
                                     "'-', at most 63)", name_field)
    check_labels(item.vmi_selector, f"{prefix}virtualMachineInstanceSelector")
    check_labels(item.namespace_selector, f"{prefix}namespaceSelector")
    check_migration_options(overlay(MigrationOptions(), item), "spec")  # what it sets, as the CR's are checked


def manifest(item: MigrationPolicy) -> dict[str, Any]:
    """As KubeVirt writes one: parse reads it back the same."""
    selectors: dict[str, Any] = {}
    if item.vmi_selector:
        selectors["virtualMachineInstanceSelector"] = dict(item.vmi_selector)
    if item.namespace_selector:
        selectors["namespaceSelector"] = dict(item.namespace_selector)
    spec: dict[str, Any] = {"selectors": selectors}
    if item.allow_auto_converge is not None:
        spec["allowAutoConverge"] = item.allow_auto_converge
    if item.bandwidth_per_migration is not None:
        spec["bandwidthPerMigration"] = format_bytes(item.bandwidth_per_migration) if item.bandwidth_per_migration \
            else "0Mi"
    if item.completion_timeout_per_gib is not None:
        spec["completionTimeoutPerGiB"] = item.completion_timeout_per_gib
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": item.name}, "spec": spec}


def _score(item: MigrationPolicy, vmi_labels: Mapping[str, str]) -> tuple[int, int] | None:
    """(labels matched in all, of them the instance's), None when it does not select the instance."""
    for selector, labels in ((item.vmi_selector, vmi_labels), (item.namespace_selector, NAMESPACE_LABELS)):
        if any(labels.get(key) != value for key, value in selector.items()):
            return None
    return len(item.vmi_selector) + len(item.namespace_selector), len(item.vmi_selector)


def matching(policies: Iterable[MigrationPolicy], vmi_labels: Mapping[str, str]) -> MigrationPolicy | None:
    """The policy for an instance with these labels, by KubeVirt's rule (the module's doc), or None."""
    best: tuple[tuple[int, int], str, MigrationPolicy] | None = None
    for item in policies:
        score = _score(item, vmi_labels)
        if score is None:
            continue
        if best is None or score > best[0] or (score == best[0] and item.name < best[1]):
            best = (score, item.name, item)
    return best[2] if best is not None else None


def overlay(options: MigrationOptions, item: MigrationPolicy | None) -> MigrationOptions:
    """The cluster's settings with the policy's over them."""
    if item is None:
        return options
    changes: dict[str, Any] = {}
    if item.allow_auto_converge is not None:
        changes["allow_auto_converge"] = item.allow_auto_converge
    if item.bandwidth_per_migration is not None:
        changes["bandwidth_per_migration"] = item.bandwidth_per_migration
    if item.completion_timeout_per_gib is not None:
        changes["completion_timeout_per_gib"] = item.completion_timeout_per_gib
    return msgspec.structs.replace(options, **changes)
