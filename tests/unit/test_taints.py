"""Taints and tolerations as Kubernetes has them: a toleration tolerates by key, value and effect; a
NoSchedule taint keeps off what does not tolerate it, a PreferNoSchedule one ranks its node last, and
a cordoned node takes what tolerates its unschedulable taint; kubectl taint's words; tolerations read
from a manifest by their paths and written back the same."""

from __future__ import annotations

import json

import pytest

from ctl import nodemarks
from proto import resources, taints
from proto.errors import ApiError
from proto.manifest import parse_instance
from proto.quantity import parse_bytes
from proto.spec import Taint, Toleration, VMSpec
from proto.state import VMI, Node
from scheduler.capacity import CapacityIndex
from scheduler.placement import place

GPU = Taint(key="gpu", value="true", effect="NoSchedule")


@pytest.mark.parametrize(("toleration", "tolerates"), [
    (Toleration(key="gpu", value="true", effect="NoSchedule"), True),
    (Toleration(key="gpu", value="true"), True),  # every effect
    (Toleration(key="gpu", operator="Exists"), True),
    (Toleration(operator="Exists"), True),  # every taint
    (Toleration(key="gpu", value="false"), False),
    (Toleration(key="gpu", value="true", effect="PreferNoSchedule"), False),
    (Toleration(key="disk", operator="Exists"), False),
])
def test_a_toleration_tolerates_as_kubernetes_says(toleration: Toleration, tolerates: bool) -> None:
    assert toleration.tolerates(GPU) is tolerates


def node(name: str, *marks: Taint, cordoned: bool = False) -> Node:
    return Node(name=name, cpus=2, memory=parse_bytes("4Gi"), kvm=False, heartbeat=0.0, started_at=0.0,
                taints=list(marks), unschedulable=cordoned)


def index_of(*nodes: Node) -> CapacityIndex:
    index = CapacityIndex()
    index.sync_nodes({n.name: n for n in nodes}, {n.name: True for n in nodes})
    return index


def test_a_taint_keeps_off_what_does_not_tolerate_it() -> None:
    index = index_of(node("n1", GPU), node("n2", GPU))
    refused = place(VMSpec(name="x"), index.candidates(), enough=1)
    assert refused.message == "0/2 nodes are available: 2 node(s) had untolerated taint {gpu: true}."
    tolerating = VMSpec(name="x", tolerations=[Toleration(key="gpu", operator="Exists", effect="NoSchedule")])
    assert place(tolerating, index.candidates(), enough=1).node == "n1"


def test_a_prefer_no_schedule_taint_ranks_its_node_last() -> None:
    soft = Taint(key="spot", effect="PreferNoSchedule")
    index = index_of(node("n1", soft), node("n2"))
    assert not index.alike()  # the first that fits is not the best any more
    busy = VMI(name="busy", uid="busy", spec=VMSpec(name="busy", memory="2Gi"), created_at=0.0)
    index.assume("busy", "n2", index.request(busy), busy)
    assert place(VMSpec(name="x"), index.candidates()).node == "n2"  # fuller, but not disliked
    tolerating = VMSpec(name="x", tolerations=[Toleration(key="spot", operator="Exists")])
    assert place(tolerating, index.candidates()).node == "n1"  # tolerated: the least allocated wins


def test_a_cordoned_node_takes_what_tolerates_its_taint() -> None:
    index = index_of(node("n1", cordoned=True))
    assert place(VMSpec(name="x"), index.candidates()).node is None
    tolerating = VMSpec(name="x", tolerations=[Toleration(key="node.kubernetes.io/unschedulable",
                                                          operator="Exists", effect="NoSchedule")])
    assert place(tolerating, index.candidates()).node == "n1"


@pytest.mark.parametrize(("text", "add", "remove"), [
    ("gpu=true:NoSchedule", Taint(key="gpu", value="true", effect="NoSchedule"), None),
    ("dedicated:PreferNoSchedule", Taint(key="dedicated", effect="PreferNoSchedule"), None),
    ("gpu:NoSchedule-", None, ("gpu", "NoSchedule")),
    ("gpu-", None, ("gpu", None)),
])
def test_kubectl_taints_words(text: str, add: Taint | None, remove: tuple[str, str | None] | None) -> None:
    assert taints.parse_text(text) == (add, remove)


@pytest.mark.parametrize("text", ["gpu=true", "gpu=true:Sometimes", "bad key!:NoSchedule", ":NoSchedule"])
def test_kubectl_taints_words_refused(text: str) -> None:
    with pytest.raises(ApiError):
        taints.parse_text(text)


def test_a_nodes_taints_change_as_kubectl_changes_them() -> None:
    once = taints.retainted([], [GPU], [], overwrite=False)
    assert once == [GPU]
    assert taints.retainted(once, [GPU], [], overwrite=False) is None  # already so
    other = Taint(key="gpu", value="false", effect="NoSchedule")
    with pytest.raises(ApiError, match="--overwrite is false"):
        taints.retainted(once, [other], [], overwrite=False)
    assert taints.retainted(once, [other], [], overwrite=True) == [other]
    both = [GPU, Taint(key="gpu", effect="PreferNoSchedule")]
    assert taints.retainted(both, [], [("gpu", "NoSchedule")], overwrite=False) == both[1:]
    assert taints.retainted(both, [], [("gpu", None)], overwrite=False) == []
    with pytest.raises(ApiError, match="not found"):
        taints.retainted(both, [], [("disk", None)], overwrite=False)
    with pytest.raises(ApiError, match="drain"):
        taints.retainted([], [Taint(key="x", effect="NoExecute")], [], overwrite=False)


def test_taint_reads_kubectls_words() -> None:
    req = nodemarks.taint_request(["node", "n1", "gpu=true:NoSchedule", "spot-"], overwrite=True)
    assert (req.name, req.add, [(r.key, r.effect) for r in req.remove], req.overwrite) == (
        "n1", [GPU], [("spot", None)], True)


def instance(tolerations: object) -> bytes:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "a"},
                       "spec": {"tolerations": tolerations, "domain": {"devices": {}, "resources": {
                           "requests": {"memory": "64Mi"}}}}}).encode()


def test_tolerations_are_read_and_written_back_as_written() -> None:
    written = [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
               {"operator": "Exists"},
               {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}]
    spec = parse_instance(instance(written))
    assert spec.tolerations[0] == Toleration(key="gpu", value="true", effect="NoSchedule")
    assert resources.vm_manifest(spec)["spec"]["template"]["spec"]["tolerations"] == written


@pytest.mark.parametrize(("tolerations", "field"), [
    ([{"key": "gpu", "operator": "Exists", "value": "x"}], "spec.tolerations[0].value"),
    ([{"operator": "Equal", "value": "x"}], "spec.tolerations[0].operator"),
    ([{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}], "spec.tolerations[0].tolerationSeconds"),
    ([{"key": "gpu", "effect": "Never"}], "spec.tolerations[0].effect"),
    ([{"key": "bad key!"}], "spec.tolerations[0].key"),
])
def test_a_toleration_that_could_not_work_is_refused_by_its_path(tolerations: object, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_instance(instance(tolerations))
    assert caught.value.field == field, caught.value.message
