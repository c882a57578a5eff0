"""Kubernetes' affinity as a KubeVirt VMI carries it (``spec.template.spec.affinity``; a VMI's
``spec.affinity``): read from the manifest with its field paths, written back, and checked again when
a record is read. The binder honours it (scheduler.affinityplan).

What exists here: nodeAffinity by the nodes' labels, and podAffinity and podAntiAffinity by the labels
of other instances' launcher pods (proto.services.pod_labels: the template's labels and
``vm.kubevirt.io/name``) over any node label as the topology, each required or preferred. Refused by
path: ``matchFields`` (selecting the Node object's fields), the ``Gt``/``Lt`` operators, and
``namespaceSelector``, ``matchLabelKeys`` and ``mismatchLabelKeys``; ``namespaces`` may name only the
one namespace there is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proto import selector
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.schema import INT, NAMESPACE, STR, Choice, ListOf, Node, Object, Refused
from proto.spec import (
    Affinity,
    NodeSelectorTerm,
    PodAffinityTerm,
    PreferredNodeTerm,
    TopologySpreadConstraint,
    VMSpec,
    WeightedPodAffinityTerm,
)

MAX_TERMS = 32
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
_ONE_NAMESPACE = f"virtbus has one namespace, {NAMESPACE!r}"


class _Raw(Node):
    """Passed on as written: proto.selector reads and checks it, with its path."""

    def walk(self, value: Any, path: str) -> Any:
        return value


_NODE_TERM = Object({
    "matchExpressions": _Raw(),
    "matchFields": Refused("it selects by the Node object's fields; select by its labels with matchExpressions "
                           "(kubernetes.io/hostname names it)"),
})
_POD_TERM = Object({
    "labelSelector": _Raw(), "topologyKey": STR, "namespaces": ListOf(Choice((NAMESPACE,))),
    "namespaceSelector": Refused(_ONE_NAMESPACE), "matchLabelKeys": Refused("it needs pod template hashes"),
    "mismatchLabelKeys": Refused("it needs pod template hashes"),
})


def _pod_affinity(term_key: str) -> Object:
    return Object({REQUIRED: ListOf(_POD_TERM),
                   PREFERRED: ListOf(Object({"weight": INT, term_key: _POD_TERM}))})


AFFINITY = Object({
    "nodeAffinity": Object({REQUIRED: Object({"nodeSelectorTerms": ListOf(_NODE_TERM)}),
                            PREFERRED: ListOf(Object({"weight": INT, "preference": _NODE_TERM}))}),
    "podAffinity": _pod_affinity("podAffinityTerm"),
    "podAntiAffinity": _pod_affinity("podAffinityTerm"),
})


SPREAD = ListOf(Object({
    "maxSkew": INT, "topologyKey": STR, "whenUnsatisfiable": Choice(("DoNotSchedule", "ScheduleAnyway")),
    "labelSelector": _Raw(), "minDomains": INT,
    # Kubernetes' defaults, which are what virtbus does: a node's affinity counts, its taints do not
    "nodeAffinityPolicy": Choice(("Honor",)), "nodeTaintsPolicy": Choice(("Ignore",)),
    "matchLabelKeys": Refused("it needs pod template hashes"),
}))


def read_spread(items: list[Mapping[str, Any]], path: str) -> list[TopologySpreadConstraint]:
    """topologySpreadConstraints SPREAD walked, at ``path``, each checked with its path."""
    out = []
    for index, item in enumerate(_bounded(items, path)):
        where = f"{path}[{index}]"
        for key in ("maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector"):
            if key not in item:
                raise ApiError(Code.INVALID, f"{where}.{key} is required", f"{where}.{key}")
        if item["maxSkew"] < 1:
            raise ApiError(Code.INVALID, f"{where}.maxSkew must be at least 1", f"{where}.maxSkew")
        if item.get("minDomains") is not None and (item["minDomains"] < 1 or
                                                   item["whenUnsatisfiable"] != "DoNotSchedule"):
            raise ApiError(Code.INVALID, f"{where}.minDomains is at least 1, with whenUnsatisfiable: DoNotSchedule",
                           f"{where}.minDomains")
        check_labels({item["topologyKey"]: ""}, f"{where}.topologyKey")
        out.append(TopologySpreadConstraint(
            max_skew=item["maxSkew"], topology_key=item["topologyKey"], when_unsatisfiable=item["whenUnsatisfiable"],
            label_selector=selector.parse(item["labelSelector"], f"{where}.labelSelector"),
            min_domains=item.get("minDomains")))
    return out


def spread_manifest(constraints: list[TopologySpreadConstraint]) -> list[dict[str, Any]]:
    """As Kubernetes writes them: read_spread reads them back the same."""
    return [{"maxSkew": c.max_skew, "topologyKey": c.topology_key, "whenUnsatisfiable": c.when_unsatisfiable,
             "labelSelector": _selector_manifest(c.label_selector),
             **({"minDomains": c.min_domains} if c.min_domains is not None else {})} for c in constraints]


def read_affinity(tree: Mapping[str, Any], path: str) -> Affinity:
    """The affinity AFFINITY walked, at ``path``; every rule checked here, with the manifest's paths."""
    node = tree.get("nodeAffinity", {})
    required = node.get(REQUIRED)
    node_required = []
    if required is not None:
        terms = required.get("nodeSelectorTerms", [])
        where = f"{path}.nodeAffinity.{REQUIRED}.nodeSelectorTerms"
        if not terms:
            raise ApiError(Code.INVALID, f"{where} must name at least one term", where)
        node_required = [_node_term(t, f"{where}[{i}]") for i, t in enumerate(_bounded(terms, where))]
    where = f"{path}.nodeAffinity.{PREFERRED}"
    node_preferred = [PreferredNodeTerm(weight=_weight(p, f"{where}[{i}]"),
                                        preference=_node_term(p.get("preference", {}), f"{where}[{i}].preference"))
                      for i, p in enumerate(_bounded(node.get(PREFERRED, []), where))]
    pod = {key: _pod_terms(tree.get(key, {}), f"{path}.{key}") for key in ("podAffinity", "podAntiAffinity")}
    return Affinity(node_required=node_required, node_preferred=node_preferred,
                    pod_required=pod["podAffinity"][0], pod_preferred=pod["podAffinity"][1],
                    anti_required=pod["podAntiAffinity"][0], anti_preferred=pod["podAntiAffinity"][1])


def _bounded(items: list[Any], path: str) -> list[Any]:
    if len(items) > MAX_TERMS:
        raise ApiError(Code.INVALID, f"{path} has {len(items)} terms; at most {MAX_TERMS}", path)
    return items


def _weight(item: Mapping[str, Any], path: str) -> int:
    weight = item.get("weight")
    if not isinstance(weight, int) or not 1 <= weight <= 100:
        raise ApiError(Code.INVALID, f"{path}.weight must be from 1 to 100", f"{path}.weight")
    return weight


def _node_term(term: Mapping[str, Any], path: str) -> NodeSelectorTerm:
    raw = term.get("matchExpressions")
    if not isinstance(raw, list) or not raw:
        raise ApiError(Code.INVALID, f"{path}.matchExpressions must list at least one requirement",
                       f"{path}.matchExpressions")
    # a requirement of node labels reads as one of pod labels; Gt and Lt are not among its operators
    picked = selector.parse({"matchExpressions": raw}, path)
    return NodeSelectorTerm(match_expressions=picked.match_expressions)


def _pod_terms(tree: Mapping[str, Any], path: str) -> tuple[list[PodAffinityTerm], list[WeightedPodAffinityTerm]]:
    where = f"{path}.{REQUIRED}"
    required = [_pod_term(t, f"{where}[{i}]") for i, t in enumerate(_bounded(tree.get(REQUIRED, []), where))]
    where = f"{path}.{PREFERRED}"
    preferred = [WeightedPodAffinityTerm(weight=_weight(p, f"{where}[{i}]"),
                                         term=_pod_term(p.get("podAffinityTerm", {}), f"{where}[{i}].podAffinityTerm"))
                 for i, p in enumerate(_bounded(tree.get(PREFERRED, []), where))]
    return required, preferred


def _pod_term(term: Mapping[str, Any], path: str) -> PodAffinityTerm:
    key = term.get("topologyKey")
    if not key:
        raise ApiError(Code.INVALID, f"{path}.topologyKey is required (kubernetes.io/hostname: a node each)",
                       f"{path}.topologyKey")
    check_labels({key: ""}, f"{path}.topologyKey")
    if "labelSelector" not in term:
        raise ApiError(Code.INVALID, f"{path}.labelSelector is required", f"{path}.labelSelector")
    return PodAffinityTerm(label_selector=selector.parse(term["labelSelector"], f"{path}.labelSelector"),
                           topology_key=key)


def affinity_manifest(affinity: Affinity) -> dict[str, Any]:
    """The affinity as Kubernetes writes it: read_affinity reads it back the same."""
    out: dict[str, Any] = {}
    node: dict[str, Any] = {}
    if affinity.node_required:
        node[REQUIRED] = {"nodeSelectorTerms": [_node_term_manifest(t) for t in affinity.node_required]}
    if affinity.node_preferred:
        node[PREFERRED] = [{"weight": p.weight, "preference": _node_term_manifest(p.preference)}
                           for p in affinity.node_preferred]
    if node:
        out["nodeAffinity"] = node
    for key, required, preferred in (("podAffinity", affinity.pod_required, affinity.pod_preferred),
                                     ("podAntiAffinity", affinity.anti_required, affinity.anti_preferred)):
        pod: dict[str, Any] = {}
        if required:
            pod[REQUIRED] = [_pod_term_manifest(t) for t in required]
        if preferred:
            pod[PREFERRED] = [{"weight": p.weight, "podAffinityTerm": _pod_term_manifest(p.term)} for p in preferred]
        if pod:
            out[key] = pod
    return out


def _node_term_manifest(term: NodeSelectorTerm) -> dict[str, Any]:
    return {"matchExpressions": [_requirement_manifest(r) for r in term.match_expressions]}


def _pod_term_manifest(term: PodAffinityTerm) -> dict[str, Any]:
    return {"labelSelector": _selector_manifest(term.label_selector), "topologyKey": term.topology_key}


def _selector_manifest(chosen: selector.LabelSelector) -> dict[str, Any]:
    label_selector: dict[str, Any] = {}
    if chosen.match_labels:
        label_selector["matchLabels"] = dict(chosen.match_labels)
    if chosen.match_expressions:
        label_selector["matchExpressions"] = [_requirement_manifest(r) for r in chosen.match_expressions]
    return label_selector


def _requirement_manifest(r: selector.Requirement) -> dict[str, Any]:
    return {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}


def check_affinity(spec: VMSpec) -> None:
    """A stored spec's affinity and spread hold to the rules they were read with (Code.INVALID)."""
    spread = spec.topology_spread_constraints
    if len(spread) > MAX_TERMS:
        raise ApiError(Code.INVALID, f"at most {MAX_TERMS} topologySpreadConstraints", "spec.topologySpreadConstraints")
    for c in spread:
        if c.max_skew < 1 or (c.min_domains is not None and c.min_domains < 1) or not c.topology_key:
            raise ApiError(Code.INVALID, "a topologySpreadConstraint needs maxSkew and minDomains of at least 1 and a "
                                         "topologyKey", "spec.topologySpreadConstraints")
        check_labels({c.topology_key: ""}, "spec.topologySpreadConstraints")
        selector.check(c.label_selector, "spec.topologySpreadConstraints")
    affinity = spec.affinity
    if affinity is None:
        return
    field = "spec.affinity"
    counts = [len(affinity.node_required), len(affinity.node_preferred), len(affinity.pod_required),
              len(affinity.pod_preferred), len(affinity.anti_required), len(affinity.anti_preferred)]
    if max(counts) > MAX_TERMS:
        raise ApiError(Code.INVALID, f"an affinity has at most {MAX_TERMS} terms of each kind", field)
    weights = [p.weight for p in affinity.node_preferred] + \
        [p.weight for p in [*affinity.pod_preferred, *affinity.anti_preferred]]
    if any(not 1 <= w <= 100 for w in weights):
        raise ApiError(Code.INVALID, "a preference's weight is from 1 to 100", field)
    for term in [*affinity.node_required, *(p.preference for p in affinity.node_preferred)]:
        if not term.match_expressions:
            raise ApiError(Code.INVALID, "a node selector term needs a requirement", field)
        selector.check(selector.LabelSelector(match_expressions=term.match_expressions), field)
    for pod_term in [*affinity.pod_required, *affinity.anti_required,
                     *(p.term for p in [*affinity.pod_preferred, *affinity.anti_preferred])]:
        if not pod_term.topology_key:
            raise ApiError(Code.INVALID, "a pod affinity term needs a topologyKey", field)
        check_labels({pod_term.topology_key: ""}, field)
        selector.check(pod_term.label_selector, field)
