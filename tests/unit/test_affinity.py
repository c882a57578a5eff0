"""Kubernetes' affinity on VMIs: read from a manifest by its paths and written back the same; judged
per node as kube-scheduler judges it (node affinity, pod affinity and anti-affinity over a topology
label, the existing instances' anti-affinity, preferences ranking); and honoured by placement over the
binder's capacity index, decided instances included."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from proto import resources
from proto.errors import ApiError
from proto.labels import LabelSelector, Requirement
from proto.manifest import parse_instance
from proto.quantity import parse_bytes
from proto.spec import (
    Affinity,
    NodeSelectorTerm,
    PodAffinityTerm,
    PreferredNodeTerm,
    TopologySpreadConstraint,
    VMSpec,
    WeightedPodAffinityTerm,
)
from proto.state import VMI, Node
from scheduler import affinityplan
from scheduler.affinityplan import Placed, judge, scan
from scheduler.capacity import CapacityIndex
from scheduler.placement import place

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def node(name: str, zone: str | None = None, **labels: str) -> Node:
    return Node(name=name, cpus=2, memory=parse_bytes("4Gi"), kvm=False, heartbeat=0.0, started_at=0.0,
                labels={HOST: name, **({ZONE: zone} if zone else {}), **labels})


NODES = {n.name: n for n in (node("n1", "a", disk="ssd"), node("n2", "a"), node("n3", "b"), node("n4"))}


def vmi(name: str, affinity: Affinity | None = None, standalone: bool = True, **labels: str) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, labels=labels, affinity=affinity), created_at=0.0,
               standalone=standalone)


def app(value: str, key: str = HOST) -> PodAffinityTerm:
    return PodAffinityTerm(label_selector=LabelSelector(match_labels={"app": value}), topology_key=key)


# --- reading and writing ------------------------------------------------------------------------
MANIFEST: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": HOST, "operator": "In", "values": ["n1", "n2"]}]},
            {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "NotIn",
                                                                "values": ["hdd"]}]}}]},
    "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}}]},
    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
         "topologyKey": HOST, "namespaces": ["default"]}]},
}


def instance(affinity: object) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "a"},
            "spec": {"affinity": affinity, "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}


def test_an_affinity_is_read_and_written_back_as_written() -> None:
    spec = parse_instance(json.dumps(instance(MANIFEST)).encode())
    assert spec.affinity is not None
    assert spec.affinity.anti_required == [PodAffinityTerm(
        label_selector=LabelSelector(match_expressions=[Requirement(key="app", operator="In", values=["web"])]),
        topology_key=HOST)]
    written = resources.vm_manifest(spec)["spec"]["template"]["spec"]["affinity"]
    expected = json.loads(json.dumps(MANIFEST))
    del expected["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaces"]  # the one
    assert written == expected
    assert parse_instance(json.dumps(instance(written)).encode()) == spec
    stored = msgspec.json.decode(msgspec.json.encode(spec), type=VMSpec)  # a record reads back the same
    assert stored == spec


@pytest.mark.parametrize(("affinity", "field"), [
    ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields"),
    ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"),
    ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["4"]}]}]}}},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].operator"),
    ({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}}]}},
     "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
    ({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST, "namespaces": ["prod"]}]}},
     "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaces[0]"),
    ({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST, "namespaceSelector": {}}]}},
     "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector"),
    ({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 101, "podAffinityTerm": {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": HOST}}]}},
     "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
    ({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {}, "topologyKey": HOST}]}},
     "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector"),
    ({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": "bad key!"}]}},
     "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
])
def test_what_virtbus_cannot_honour_is_refused_by_its_path(affinity: object, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_instance(json.dumps(instance(affinity)).encode())
    assert caught.value.field == field, caught.value.message


# --- judging --------------------------------------------------------------------------------------
def test_node_affinity_rules_out_and_prefers_by_the_nodes_labels() -> None:
    affinity = Affinity(
        node_required=[NodeSelectorTerm(match_expressions=[Requirement(key=ZONE, operator="Exists")])],
        node_preferred=[PreferredNodeTerm(weight=7, preference=NodeSelectorTerm(
            match_expressions=[Requirement(key="disk", operator="In", values=["ssd"])]))])
    verdict = judge(vmi("x", affinity), NODES, scan([]), [])
    assert verdict.unfit == {"n4": affinityplan.NODE_AFFINITY}
    assert verdict.points == {"n1": 7}


def test_anti_affinity_keeps_a_group_apart_by_host_or_by_zone() -> None:
    placed = [Placed("n1", vmi("w1", app="web")), Placed("n4", vmi("db", app="db"))]
    by_host = judge(vmi("w2", Affinity(anti_required=[app("web")]), app="web"), NODES, scan(placed), [])
    assert by_host.unfit == {"n1": affinityplan.POD_ANTI_AFFINITY}
    by_zone = judge(vmi("w2", Affinity(anti_required=[app("web", ZONE)]), app="web"), NODES, scan(placed), [])
    assert by_zone.unfit == {"n1": affinityplan.POD_ANTI_AFFINITY, "n2": affinityplan.POD_ANTI_AFFINITY}


def test_affinity_keeps_together_and_the_first_of_a_group_goes_anywhere() -> None:
    together = Affinity(pod_required=[app("web")])
    first = judge(vmi("w1", together, app="web"), NODES, scan([]), [])
    assert first.unfit == {}  # it selects itself: the first may go anywhere
    alone = judge(vmi("x", together, app="other"), NODES, scan([]), [])
    assert set(alone.unfit) == set(NODES)  # it needs a web instance, and there is none
    second = judge(vmi("w2", together, app="web"), NODES, scan([Placed("n3", vmi("w1", app="web"))]), [])
    assert set(second.unfit) == {"n1", "n2", "n4"}


def test_an_instance_placed_keeps_others_away_by_its_own_terms() -> None:
    loner = vmi("loner", Affinity(anti_required=[app("noisy")]), app="quiet")
    holders = [Placed("n2", loner)]
    verdict = judge(vmi("n", app="noisy"), NODES, scan([]), holders)
    assert verdict.unfit == {"n2": affinityplan.EXISTING_ANTI_AFFINITY}
    assert judge(vmi("q", app="calm"), NODES, scan([]), holders).unfit == {}


def test_preferences_add_and_take_points() -> None:
    placed = [Placed("n3", vmi("db", app="db")), Placed("n1", vmi("w1", app="web"))]
    affinity = Affinity(pod_preferred=[WeightedPodAffinityTerm(weight=50, term=app("db", ZONE))],
                        anti_preferred=[WeightedPodAffinityTerm(weight=20, term=app("web"))])
    assert judge(vmi("w2", affinity, app="web"), NODES, scan(placed), []).points == {"n3": 50, "n1": -20}


def test_a_vm_instance_is_seen_by_its_launcher_pods_labels() -> None:
    """A VM's instance carries vm.kubevirt.io/name, as its virt-launcher pod does: a term may select it."""
    term = PodAffinityTerm(label_selector=LabelSelector(match_labels={"vm.kubevirt.io/name": "db"}),
                           topology_key=HOST)
    verdict = judge(vmi("web", Affinity(pod_required=[term])), NODES, scan([Placed("n2", vmi("db", standalone=False))]),
                    [])
    assert set(verdict.unfit) == {"n1", "n3", "n4"}


# --- placement over the capacity index ------------------------------------------------------------
def index_of(nodes: dict[str, Node]) -> CapacityIndex:
    index = CapacityIndex()
    index.sync_nodes(nodes, dict.fromkeys(nodes, True))
    return index


def test_decided_instances_count_so_a_burst_spreads() -> None:
    nodes = {n: NODES[n] for n in ("n1", "n2")}
    index = index_of(nodes)
    spread = Affinity(anti_required=[app("web")])
    chosen = []
    for name in ("w1", "w2", "w3"):
        one = vmi(name, spread, app="web")
        verdict = judge(one, index.node_records, index.matching, index.holders())
        choice = place(one.spec, index.candidates(), enough=1, affinity=verdict)
        chosen.append(choice.node)
        if choice.node is not None:
            index.assume(name, choice.node, index.request(one), one)  # decided, its write not yet landed
        else:
            assert choice.message == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    assert sorted(n or "" for n in chosen[:2]) == ["n1", "n2"] and chosen[2] is None
    assert len(index.holders()) == 2


def test_preferences_outrank_the_least_allocated_node() -> None:
    nodes = {n: NODES[n] for n in ("n1", "n2")}
    index = index_of(nodes)
    index.assume("busy", "n1", index.request(vmi("busy")), vmi("busy"))  # n2 is the least allocated
    likes_ssd = Affinity(node_preferred=[PreferredNodeTerm(weight=1, preference=NodeSelectorTerm(
        match_expressions=[Requirement(key="disk", operator="In", values=["ssd"])]))])
    one = vmi("x", likes_ssd)
    verdict = judge(one, index.node_records, index.matching, index.holders())
    assert place(one.spec, index.candidates(), affinity=verdict).node == "n1"
    assert place(one.spec, index.candidates()).node == "n2"


# --- topology spread constraints ---------------------------------------------------------------
def spread(max_skew: int = 1, key: str = HOST, when: str = "DoNotSchedule",
           min_domains: int | None = None) -> TopologySpreadConstraint:
    return TopologySpreadConstraint(max_skew=max_skew, topology_key=key, when_unsatisfiable=when,  # type: ignore[arg-type]
                                    label_selector=LabelSelector(match_labels={"app": "web"}), min_domains=min_domains)


def spreading(name: str, *constraints: TopologySpreadConstraint, **spec: Any) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, labels={"app": "web"},
                                                topology_spread_constraints=list(constraints), **spec),
               created_at=0.0, standalone=True)


def test_do_not_schedule_keeps_domains_within_max_skew() -> None:
    placed = [Placed("n1", vmi("w1", app="web")), Placed("n1", vmi("w2", app="web")),
              Placed("n2", vmi("w3", app="web"))]
    # hosts: n1 2, n2 1, n3 0 (n4 has a host label too): only n3 and n4 keep within 1 of the emptiest
    verdict = judge(spreading("w4", spread()), NODES, scan(placed), [])
    assert verdict.unfit == {"n1": affinityplan.SPREAD, "n2": affinityplan.SPREAD}
    # by zone: a holds 3, b 0, and n4 is in no zone: only b, and n4 is ruled out for lacking the label
    by_zone = judge(spreading("w4", spread(key=ZONE)), NODES, scan(placed), [])
    assert by_zone.unfit == {"n1": affinityplan.SPREAD, "n2": affinityplan.SPREAD, "n4": affinityplan.SPREAD}
    # the nodes it may not go to are no domains: selecting disk=ssd, only n1's domain counts
    only_ssd = judge(spreading("w4", spread(max_skew=1), node_selector={"disk": "ssd"}), NODES, scan(placed), [])
    assert "n1" not in only_ssd.unfit  # n1 alone is eligible: its 2 are the emptiest there is


def test_min_domains_counts_missing_domains_as_empty() -> None:
    placed = [Placed("n1", vmi("w1", app="web")), Placed("n3", vmi("w2", app="web"))]  # a zone each
    assert judge(spreading("w3", spread(key=ZONE)), NODES, scan(placed), []).unfit == {"n4": affinityplan.SPREAD}
    # three zones wanted, two there: the emptiest counts as holding none, so both zones are too full
    assert set(judge(spreading("w3", spread(key=ZONE, min_domains=3)), NODES, scan(placed), []).unfit) == {
        "n1", "n2", "n3", "n4"}


def test_schedule_anyway_ranks_by_how_many_are_there() -> None:
    placed = [Placed("n1", vmi("w1", app="web")), Placed("n1", vmi("w2", app="web")),
              Placed("n2", vmi("w3", app="web"))]
    verdict = judge(spreading("w4", spread(when="ScheduleAnyway")), NODES, scan(placed), [])
    assert verdict.unfit == {} and verdict.points == {"n1": -2, "n2": -1}


def test_spread_constraints_are_read_and_written_back_and_refused_by_path() -> None:
    written = [{"maxSkew": 1, "topologyKey": HOST, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}, "minDomains": 2}]
    doc = instance(None)
    doc["spec"].pop("affinity")
    doc["spec"]["topologySpreadConstraints"] = written
    spec = parse_instance(json.dumps(doc).encode())
    assert spec.topology_spread_constraints == [spread(min_domains=2)]
    assert resources.vm_manifest(spec)["spec"]["template"]["spec"]["topologySpreadConstraints"] == written
    field = "spec.topologySpreadConstraints[0]"
    for change, where in (({"maxSkew": 0}, f"{field}.maxSkew"), ({"whenUnsatisfiable": "Never"},
                                                                 f"{field}.whenUnsatisfiable"),
                          ({"nodeTaintsPolicy": "Honor"}, f"{field}.nodeTaintsPolicy"),
                          ({"matchLabelKeys": ["pod-template-hash"]}, f"{field}.matchLabelKeys"),
                          ({"whenUnsatisfiable": "ScheduleAnyway"}, f"{field}.minDomains")):
        doc["spec"]["topologySpreadConstraints"] = [{**written[0], **change}]
        with pytest.raises(ApiError) as caught:
            parse_instance(json.dumps(doc).encode())
        assert caught.value.field == where, caught.value.message


def test_the_index_finds_instances_by_label_as_they_come_and_go() -> None:
    index = index_of({n: NODES[n] for n in ("n1", "n2")})
    web = LabelSelector(match_labels={"app": "web"})
    web_blue = LabelSelector(match_labels={"app": "web", "tier": "blue"})
    index.observe("w1", msgspec.structs.replace(vmi("w1", app="web", tier="blue"), node_name="n1"))
    assert [p.vmi.name for p in index.matching(web)] == ["w1"]  # the label index is built here
    index.assume("w2", "n2", index.request(vmi("w2", app="web")), vmi("w2", app="web"))  # kept up from now on
    index.observe("db", msgspec.structs.replace(vmi("db", app="db"), node_name="n2"))
    assert sorted(p.vmi.name for p in index.matching(web)) == ["w1", "w2"]
    assert [p.vmi.name for p in index.matching(web_blue)] == ["w1"]
    expressions = LabelSelector(match_expressions=[Requirement(key="app", operator="NotIn", values=["web"])])
    assert [p.vmi.name for p in index.matching(expressions)] == ["db"]
    index.observe("w1", None)  # gone
    assert [(p.vmi.name, p.node) for p in index.matching(web)] == [("w2", "n2")]
    assert index.matching(web_blue) == []
    # a VM's instance is found by vm.kubevirt.io/name, as its launcher pod is
    index.observe("vm1", msgspec.structs.replace(vmi("vm1", standalone=False), node_name="n1"))
    assert [p.vmi.name for p in index.matching(LabelSelector(match_labels={"vm.kubevirt.io/name": "vm1"}))] == ["vm1"]
