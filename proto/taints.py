"""Kubernetes' taints and tolerations (pure): a node's taints (an admin's, ``virtbus taint node``; a
cordoned node's ``node.kubernetes.io/unschedulable``) keep off the instances that do not tolerate them.

Tolerations are read from a VMI's spec (``spec.template.spec.tolerations``) with their paths, written
back and checked; taints from kubectl's text (``key=value:NoSchedule``, ``key:NoSchedule-``, ``key-``).
A taint here is NoSchedule or PreferNoSchedule: NoExecute would end what runs there, which is what
``virtbus drain`` does, and is refused with that said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.schema import INT, STR, Choice, ListOf, Object
from proto.spec import TAINT_EFFECTS, Taint, TaintEffect, Toleration, VMSpec

# what kube-scheduler reads a cordoned node as: an instance tolerating it may still go there
UNSCHEDULABLE = Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
KEEPS_OFF: tuple[TaintEffect, ...] = ("NoSchedule", "NoExecute")
NODE_EFFECTS: tuple[TaintEffect, ...] = ("NoSchedule", "PreferNoSchedule")
MAX_TAINTS = 32
MAX_TOLERATIONS = 64
TOLERATIONS = ListOf(Object({"key": STR, "operator": Choice(("Equal", "Exists")), "value": STR,
                             "effect": Choice(TAINT_EFFECTS), "tolerationSeconds": INT}))
_EFFECTS: dict[str, TaintEffect] = {effect: effect for effect in TAINT_EFFECTS}
_TEXT = re.compile(r"^(?P<key>[^=:]+?)(=(?P<value>[^:]*))?(:(?P<effect>[A-Za-z]+))?(?P<remove>-)?$")


def tolerated(taint: Taint, tolerations: Iterable[Toleration]) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def untolerated(taints: Iterable[Taint], tolerations: list[Toleration],
                effects: tuple[TaintEffect, ...]) -> list[Taint]:
    """The node's taints of those effects that none of the tolerations tolerates."""
    return [t for t in taints if t.effect in effects and not tolerated(t, tolerations)]


def read_tolerations(items: list[Mapping[str, Any]], path: str) -> list[Toleration]:
    """Tolerations TOLERATIONS walked, at ``path``, each checked with its path."""
    if len(items) > MAX_TOLERATIONS:
        raise ApiError(Code.INVALID, f"{path} has {len(items)} tolerations; at most {MAX_TOLERATIONS}", path)
    out = []
    for index, item in enumerate(items):
        toleration = Toleration(key=item.get("key", ""), operator=item.get("operator", "Equal"),
                                value=item.get("value", ""), effect=item.get("effect"),
                                toleration_seconds=item.get("tolerationSeconds"))
        _check(toleration, f"{path}[{index}]")
        out.append(toleration)
    return out


def _check(t: Toleration, path: str) -> None:
    if t.key:
        check_labels({t.key: ""}, f"{path}.key")
    elif t.operator != "Exists":
        raise ApiError(Code.INVALID, f"{path}.operator must be Exists when the key is empty (every taint)",
                       f"{path}.operator")
    if t.operator == "Exists" and t.value:
        raise ApiError(Code.INVALID, f"{path}.value must be empty with operator Exists", f"{path}.value")
    if t.value:
        check_labels({"v": t.value}, f"{path}.value")
    if t.toleration_seconds is not None and t.effect != "NoExecute":
        raise ApiError(Code.INVALID, f"{path}.tolerationSeconds goes with effect NoExecute only",
                       f"{path}.tolerationSeconds")


def tolerations_manifest(tolerations: list[Toleration]) -> list[dict[str, Any]]:
    """As Kubernetes writes them: read_tolerations reads them back the same."""
    return [{k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect),
                                 ("tolerationSeconds", t.toleration_seconds)) if v not in (None, "")}
            for t in tolerations]


def check_tolerations(spec: VMSpec) -> None:
    """A stored spec's tolerations hold to the rules they were read with."""
    if len(spec.tolerations) > MAX_TOLERATIONS:
        raise ApiError(Code.INVALID, f"at most {MAX_TOLERATIONS} tolerations", "spec.tolerations")
    for index, toleration in enumerate(spec.tolerations):
        _check(toleration, f"spec.tolerations[{index}]")


def parse_text(text: str) -> tuple[Taint | None, tuple[str, TaintEffect | None] | None]:
    """kubectl taint's word: (a taint to add, None) or (None, (key, effect or None) to remove)."""
    match = _TEXT.fullmatch(text)
    if match is None:
        raise ApiError(Code.BAD_REQUEST, f"{text!r}: a taint is key=value:Effect (or key:Effect), and key:Effect- "
                                         "or key- removes one", "taints")
    key, value, named = match["key"], match["value"] or "", match["effect"]
    check_labels({key: ""}, "taints")
    effect = _EFFECTS.get(named) if named is not None else None
    if named is not None and effect is None:
        raise ApiError(Code.BAD_REQUEST, f"{text!r}: the effect is one of {', '.join(TAINT_EFFECTS)}", "taints")
    if match["remove"]:
        return None, (key, effect)
    if effect is None:
        raise ApiError(Code.BAD_REQUEST, f"{text!r}: a taint needs an effect (key=value:NoSchedule)", "taints")
    return Taint(key=key, value=value, effect=effect), None


def check_taint(taint: Taint, field: str) -> None:
    """A node's taint as virtbus takes one: a label key, a label value, NoSchedule or PreferNoSchedule
    (an admin's request, and a record read off the bus)."""
    check_labels({taint.key: "", **({"v": taint.value} if taint.value else {})}, field)
    if taint.effect not in NODE_EFFECTS:
        raise ApiError(Code.INVALID, f"taint {taint.key}:{taint.effect}: a node's taint is NoSchedule or "
                                     "PreferNoSchedule here; to end what runs on a node, drain it", field)


def retainted(current: list[Taint], add: list[Taint], remove: list[tuple[str, TaintEffect | None]],
              overwrite: bool) -> list[Taint] | None:
    """The node's taints with those added and removed; None when nothing changes (pure). A taint is
    a key and an effect: another value for one there needs ``overwrite``, as kubectl's."""
    taints = list(current)
    for taint in add:
        check_taint(taint, "taints")
        same = next((t for t in taints if (t.key, t.effect) == (taint.key, taint.effect)), None)
        if same is not None and same.value != taint.value and not overwrite:
            raise ApiError(Code.INVALID, f"node already has a taint with key ({taint.key}) and effect "
                                         f"({taint.effect}), and --overwrite is false", "taints")
        taints = [t for t in taints if t is not same] + [taint]
    for key, effect in remove:
        kept = [t for t in taints if not (t.key == key and effect in (None, t.effect))]
        if len(kept) == len(taints):
            raise ApiError(Code.NOT_FOUND, f"taint {key}{':' + effect if effect else ''} not found", "taints")
        taints = kept
    if len(taints) > MAX_TAINTS:
        raise ApiError(Code.INVALID, f"a node takes at most {MAX_TAINTS} taints", "taints")
    return None if taints == current else taints
