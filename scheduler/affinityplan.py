"""Pure affinity judgement for one decision: which nodes a VMI's affinity (proto.spec.Affinity) and
topology spread constraints rule out and why, in kube-scheduler's words, and how many points each node
earns from its preferences.

Instances are seen by their launcher pod's labels (proto.services.pod_labels), as a Service selects
them; what counts is where they are bound, decided ones included (the binder's assumptions), so a
burst of instances that keep apart is spread even before its writes land. A topology domain is the
set of nodes sharing one value of the term's ``topologyKey`` label; a node without the label is in
none. As in Kubernetes, the required anti-affinity of instances already placed counts too: a node is
ruled out for an instance that one of them, by its own terms, keeps away.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from proto.labels import LabelSelector, holds
from proto.services import pod_labels
from proto.spec import Affinity, NodeSelectorTerm, PodAffinityTerm, VMSpec
from proto.state import VMI, Node

NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
POD_AFFINITY = "node(s) didn't match pod affinity rules"
POD_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
SPREAD = "node(s) didn't match pod topology spread constraints"


@dataclass(frozen=True)
class Verdict:
    unfit: dict[str, str] = field(default_factory=dict)  # node -> why it is ruled out
    points: dict[str, int] = field(default_factory=dict)  # node -> its preferences' weights (may be < 0)

    def reason(self, node: str) -> str | None:
        return self.unfit.get(node)


@dataclass(frozen=True)
class Placed:
    """An instance bound (or being bound) to a node."""

    node: str
    vmi: VMI


def needed(vmi: VMI, anti_holders: bool) -> bool:
    """Whether a decision for ``vmi`` needs a judgement: it has an affinity or spread constraints, or
    some instance placed keeps others away (anti_holders)."""
    return vmi.spec.affinity is not None or bool(vmi.spec.topology_spread_constraints) or anti_holders


def node_matches(term: NodeSelectorTerm, node: Node) -> bool:
    return all(holds(r, node.labels) for r in term.match_expressions)


def node_selected(spec: VMSpec, node: Node) -> bool:
    """The node has every label of the VM's nodeSelector."""
    return all(node.labels.get(k) == v for k, v in spec.node_selector.items())


Matching = Callable[[LabelSelector], Iterable[Placed]]  # the instances placed that a selector picks


def scan(placed: Iterable[Placed]) -> Matching:
    """A Matching that looks at every instance placed (scheduler.capacity indexes them by label)."""
    every = list(placed)
    return lambda chosen: [p for p in every if chosen.matches(pod_labels(p.vmi))]


def judge(vmi: VMI, nodes: Mapping[str, Node], matching: Matching, holders: Iterable[Placed]) -> Verdict:
    """The verdict for ``vmi`` over ``nodes``, given the instances placed that each of its selectors
    picks (``matching``) and the ``holders`` of a required anti-affinity among them (its own record is
    left out of both). Only its own terms' selectors are looked up: every other decision looks at the
    holders alone."""
    affinity = vmi.spec.affinity or Affinity()
    own = pod_labels(vmi)

    def others(chosen: LabelSelector) -> list[Placed]:
        return [p for p in matching(chosen) if p.vmi.name != vmi.name and p.node in nodes]

    unfit: dict[str, str] = {}
    points: dict[str, int] = dict.fromkeys(nodes, 0)

    def rule_out(node: str, why: str) -> None:
        unfit.setdefault(node, why)

    if affinity.node_required:
        for name, node in nodes.items():
            if not any(node_matches(t, node) for t in affinity.node_required):
                rule_out(name, NODE_AFFINITY)
    for pref in affinity.node_preferred:
        for name, node in nodes.items():
            if node_matches(pref.preference, node):
                points[name] += pref.weight

    def domains(term: PodAffinityTerm) -> set[str]:
        """The topology values of the nodes holding an instance the term selects."""
        return {value for p in others(term.label_selector)
                if (value := nodes[p.node].labels.get(term.topology_key)) is not None}

    for term in affinity.pod_required:
        held = domains(term)
        if not held and term.label_selector.matches(own):
            continue  # the first of a group that keeps together may go anywhere (Kubernetes' rule)
        for name, node in nodes.items():
            if node.labels.get(term.topology_key) not in held:
                rule_out(name, POD_AFFINITY)
    for term in affinity.anti_required:
        held = domains(term)
        for name, node in nodes.items():
            if node.labels.get(term.topology_key) in held:
                rule_out(name, POD_ANTI_AFFINITY)
    for weighted, sign in [*((w, 1) for w in affinity.pod_preferred), *((w, -1) for w in affinity.anti_preferred)]:
        held = domains(weighted.term)
        for name, node in nodes.items():
            if node.labels.get(weighted.term.topology_key) in held:
                points[name] += sign * weighted.weight
    # the others' required anti-affinity, where it selects this instance
    for p in holders:
        if p.vmi.name == vmi.name or p.node not in nodes:
            continue
        keeps_away = p.vmi.spec.affinity.anti_required if p.vmi.spec.affinity is not None else []
        for term in keeps_away:
            value = nodes[p.node].labels.get(term.topology_key)
            if value is None or not term.label_selector.matches(own):
                continue
            for name, node in nodes.items():
                if node.labels.get(term.topology_key) == value:
                    rule_out(name, EXISTING_ANTI_AFFINITY)
    _spread(vmi, own, nodes, others, rule_out, points)
    return Verdict(unfit, {n: v for n, v in points.items() if v})


def _spread(vmi: VMI, own: Mapping[str, str], nodes: Mapping[str, Node],
            others: Callable[[LabelSelector], list[Placed]], rule_out: Callable[[str, str], None],
            points: dict[str, int]) -> None:
    """Kubernetes' PodTopologySpread (own: the VMI's launcher-pod labels): per constraint, the instances
    it selects counted per domain over the nodes the VMI may go to (its nodeSelector and required node
    affinity: nodeAffinityPolicy Honor); DoNotSchedule rules out a node whose domain would then hold
    more than maxSkew above the emptiest (a node without the label, too); ScheduleAnyway takes a point
    for each such instance there."""
    spec = vmi.spec
    required = spec.affinity.node_required if spec.affinity is not None else []
    eligible = {name: node for name, node in nodes.items()
                if node_selected(spec, node) and (not required or any(node_matches(t, node) for t in required))}
    for c in spec.topology_spread_constraints:
        key = c.topology_key
        domains = {node.labels[key] for node in eligible.values() if key in node.labels}
        counts = Counter(eligible[p.node].labels[key] for p in others(c.label_selector)
                         if p.node in eligible and key in eligible[p.node].labels)
        emptiest = min((counts[d] for d in domains), default=0)
        if c.min_domains is not None and len(domains) < c.min_domains:
            emptiest = 0  # too few domains: as if the missing ones held none
        me = 1 if c.label_selector.matches(own) else 0
        for name, node in nodes.items():
            value = node.labels.get(key)
            if c.when_unsatisfiable == "DoNotSchedule":
                if value is None or counts[value] + me - emptiest > c.max_skew:
                    rule_out(name, SPREAD)
            elif value is not None:
                points[name] -= counts[value]
