"""Kubernetes' PriorityClasses (``scheduling.k8s.io/v1``), pure: a VMI's ``priorityClassName`` gives it a
priority, and the binder places higher ones first and, when one fits nowhere, preempts instances of
lower priority to make room (scheduler.preemption), unless its class's ``preemptionPolicy`` is Never.

As in Kubernetes: an instance naming no class takes the priority of the class that is
``globalDefault`` (at most one is), else 0; a class's value and preemptionPolicy cannot change once it
exists (delete it and apply it again); a user's class is at most 1,000,000,000; names beginning
``system-`` are Kubernetes' own two (system-cluster-critical, system-node-critical), which are always
there and cannot be deleted. The priority is decided when the instance is bound and kept on it
(Kubernetes' pod.spec.priority), so a class deleted later changes nothing that runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from proto.errors import ApiError, Code
from proto.schema import BOOL, CLUSTER_METADATA, INT, STR, Choice, Object, check_kind, required
from proto.subjects import is_dns1123_label

API_VERSION = "scheduling.k8s.io/v1"
KIND = "PriorityClass"
PreemptionPolicy = Literal["PreemptLowerPriority", "Never"]
POLICIES: tuple[PreemptionPolicy, ...] = ("PreemptLowerPriority", "Never")
HIGHEST_USER_PRIORITY = 1_000_000_000  # Kubernetes' HighestUserDefinablePriority
LOWEST_PRIORITY = -(2**31)  # an int32, as Kubernetes' value is
SYSTEM_PREFIX = "system-"
MAX_DESCRIPTION = 1024
_MANIFEST = Object({"apiVersion": STR, "kind": STR, "metadata": CLUSTER_METADATA, "value": INT,
                    "globalDefault": BOOL, "preemptionPolicy": Choice(POLICIES), "description": STR})


class PriorityClass(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True,
                    omit_defaults=True):
    name: str
    value: int
    global_default: bool = False
    preemption_policy: PreemptionPolicy = "PreemptLowerPriority"
    description: str = ""
    builtin: bool = False  # Kubernetes' own: always there, never stored, never deleted


class PriorityClassReply(msgspec.Struct, frozen=True, kw_only=True):
    item: PriorityClass


class PriorityClassList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PriorityClass]


BUILTIN: dict[str, PriorityClass] = {c.name: c for c in (
    PriorityClass(name="system-node-critical", value=2_000_001_000, builtin=True,
                  description="Used for system critical pods that must not be moved from their current node."),
    PriorityClass(name="system-cluster-critical", value=2_000_000_000, builtin=True,
                  description="Used for system critical pods that must run in the cluster, but can be moved to "
                              "another node if necessary."),
)}
HIGHEST_PRIORITY = max(c.value for c in BUILTIN.values())  # system-node-critical's


@dataclass(frozen=True)
class Priority:
    """What an instance is given: its priority, and whether it may preempt lower ones."""

    value: int = 0
    preempts: bool = True


def is_priority_class(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == KIND


def parse(obj: Mapping[str, Any]) -> PriorityClass:
    """A PriorityClass manifest as Kubernetes users write it; checked."""
    check_kind(obj, (API_VERSION,), KIND)
    tree = _MANIFEST.walk(obj, "")
    name = required(required(tree, "metadata", ""), "name", "metadata")
    item = PriorityClass(name=name, value=required(tree, "value", ""), global_default=tree.get("globalDefault", False),
                         preemption_policy=tree.get("preemptionPolicy", "PreemptLowerPriority"),
                         description=tree.get("description", ""))
    check(item, "metadata.name", "")
    return item


def manifest(item: PriorityClass) -> dict[str, Any]:
    """As Kubernetes writes one: parse reads it back the same (a built-in one aside)."""
    out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": item.name},
                           "value": item.value, "preemptionPolicy": item.preemption_policy}
    if item.global_default:
        out["globalDefault"] = True
    if item.description:
        out["description"] = item.description
    return out


def check(item: PriorityClass, name_field: str = "name", prefix: str = "") -> None:
    """A user's class: a DNS-1123 label not beginning system-, a value Kubernetes lets users give, a
    description of printable text."""
    if not is_dns1123_label(item.name):
        raise ApiError(Code.INVALID, f"{item.name[:64]!r} must be a DNS-1123 label (lowercase letters, digits and "
                                     "'-', at most 63)", name_field)
    if item.name.startswith(SYSTEM_PREFIX) or item.builtin:
        raise ApiError(Code.INVALID, f"{item.name}: names beginning {SYSTEM_PREFIX!r} are Kubernetes' own "
                                     f"({', '.join(BUILTIN)})", name_field)
    if not LOWEST_PRIORITY <= item.value <= HIGHEST_USER_PRIORITY:
        raise ApiError(Code.INVALID, f"value {item.value} is out of range: a user's class is at most "
                                     f"{HIGHEST_USER_PRIORITY:,} (higher ones are Kubernetes' own)", f"{prefix}value")
    if len(item.description) > MAX_DESCRIPTION or not item.description.isprintable():
        raise ApiError(Code.INVALID, f"description is printable text of at most {MAX_DESCRIPTION} characters",
                       f"{prefix}description")


def replaced(old: PriorityClass | None, new: PriorityClass, others: Mapping[str, PriorityClass]) -> None:
    """Whether ``new`` may be stored where ``old`` is (None: a new class), beside the other classes:
    value and preemptionPolicy never change, and one class at most is the global default."""
    if old is not None and (old.value, old.preemption_policy) != (new.value, new.preemption_policy):
        field, was = ("value", str(old.value)) if old.value != new.value else ("preemptionPolicy",
                                                                               old.preemption_policy)
        raise ApiError(Code.INVALID, f"PriorityClass {new.name}: {field} may not be changed (it is {was}); "
                                     "delete the class and apply it again", field)
    if new.global_default:
        other = next((c.name for c in others.values() if c.global_default and c.name != new.name), None)
        if other is not None:
            raise ApiError(Code.INVALID, f"PriorityClass {other} is the global default already: at most one class "
                                         "is", "globalDefault")


def resolve(name: str | None, classes: Mapping[str, PriorityClass]) -> Priority:
    """An instance's priority from its priorityClassName and the classes there are (the built-in ones
    counted whether given or not). Raises ApiError(NOT_FOUND) for a class that does not exist."""
    if name is None:
        found = next((c for c in classes.values() if c.global_default), None)
        if found is None:
            return Priority()
    else:
        found = classes.get(name) or BUILTIN.get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"no PriorityClass with name {name} was found", "spec.priorityClassName")
    return Priority(found.value, found.preemption_policy != "Never")
