"""PriorityClasses and preemption: the manifests as Kubernetes has them, the planner's choice of victims,
the binder's queue by priority, and the binder preempting against a small fake bucket."""

from __future__ import annotations

import msgspec
import pytest

from proto import priorities
from proto.errors import ApiError, Code
from proto.events import Event
from proto.manifest import parse_manifest_obj
from proto.priorities import BUILTIN, Priority, PriorityClass
from proto.resources import vm_manifest
from proto.spec import VMSpec
from proto.state import VMI, Phase
from scheduler.pendingqueue import PendingQueue
from scheduler.placement import NodeUsage, Request
from scheduler.preemption import Running, plan
from scheduler.priorityclasses import FixedClasses
from servicekit.store import Change
from tests.unit.test_binder import BOOKED, FakeNodes, FakeVmis, binder_over, node

HIGH = PriorityClass(name="high", value=1000)
NEVER = PriorityClass(name="polite", value=1000, preemption_policy="Never")
LOW = PriorityClass(name="low", value=-10)


def manifest(**fields: object) -> dict[str, object]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"},
            "value": 1000, **fields}


def test_a_priority_class_as_kubernetes_writes_it() -> None:
    item = priorities.parse(manifest(globalDefault=True, description="VMs that matter", preemptionPolicy="Never"))
    assert item == PriorityClass(name="high", value=1000, global_default=True, preemption_policy="Never",
                                 description="VMs that matter")
    assert priorities.parse(priorities.manifest(item)) == item
    assert priorities.parse(manifest()).preemption_policy == "PreemptLowerPriority"  # Kubernetes' default


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"value": 1_000_000_001}, "value", "at most 1,000,000,000"),
    ({"value": "high"}, "value", "integer"),
    ({"metadata": {"name": "system-mine"}}, "metadata.name", "Kubernetes' own"),
    ({"metadata": {"name": "Bad_Name"}}, "metadata.name", "DNS-1123"),
    ({"metadata": {"name": "x" * 64}}, "metadata.name", "DNS-1123"),
    ({"preemptionPolicy": "Sometimes"}, "preemptionPolicy", "PreemptLowerPriority"),
    ({"description": "two\nlines"}, "description", "printable"),
    ({"globalDefalt": True}, "globalDefalt", "not supported"),
])
def test_refused_with_the_fields_path(fields: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ApiError) as err:
        priorities.parse(manifest(**fields))
    assert err.value.field == field and words in err.value.message


def test_value_and_policy_never_change_and_one_global_default() -> None:
    priorities.replaced(HIGH, msgspec.structs.replace(HIGH, description="new words"), {"high": HIGH})
    with pytest.raises(ApiError) as err:
        priorities.replaced(HIGH, msgspec.structs.replace(HIGH, value=5), {"high": HIGH})
    assert err.value.field == "value" and "may not be changed" in err.value.message
    with pytest.raises(ApiError) as err:
        priorities.replaced(HIGH, msgspec.structs.replace(HIGH, preemption_policy="Never"), {"high": HIGH})
    assert err.value.field == "preemptionPolicy"
    default = PriorityClass(name="usual", value=10, global_default=True)
    with pytest.raises(ApiError) as err:
        priorities.replaced(None, msgspec.structs.replace(HIGH, global_default=True), {"usual": default})
    assert err.value.field == "globalDefault" and "usual" in err.value.message
    priorities.replaced(default, msgspec.structs.replace(default, description="still"), {"usual": default})


def test_an_instances_priority() -> None:
    classes = {"high": HIGH, "polite": NEVER}
    assert priorities.resolve("high", classes) == Priority(1000, True)
    assert priorities.resolve("polite", classes) == Priority(1000, False)
    assert priorities.resolve("system-node-critical", {}) == Priority(2_000_001_000, True)
    assert priorities.resolve(None, classes) == Priority(0, True)  # no global default: 0
    usual = PriorityClass(name="usual", value=7, global_default=True)
    assert priorities.resolve(None, {**classes, "usual": usual}) == Priority(7, True)
    with pytest.raises(ApiError) as err:
        priorities.resolve("missing", classes)
    assert err.value.code is Code.NOT_FOUND and err.value.message == "no PriorityClass with name missing was found"
    assert set(BUILTIN) == {"system-node-critical", "system-cluster-critical"}


def test_a_vm_names_its_class_and_it_is_written_back() -> None:
    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm"},
           "spec": {"runStrategy": "Halted", "template": {"spec": {
               "priorityClassName": "non-preemtible", "domain": {"memory": {"guest": "128Mi"}, "resources": {}}}}}}
    vm = parse_manifest_obj(doc)
    assert isinstance(vm, VMSpec) and vm.priority_class_name == "non-preemtible"
    assert vm_manifest(vm)["spec"]["template"]["spec"]["priorityClassName"] == "non-preemtible"
    doc["spec"]["template"]["spec"]["priorityClassName"] = "Not/A/Name"  # type: ignore[index]
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(doc)
    assert err.value.field == "spec.template.spec.priorityClassName"


def test_the_queue_takes_the_highest_priority_first_each_once() -> None:
    queue = PendingQueue()
    for name, rank in (("a", 0), ("b", 0), ("c", 100), ("d", -5), ("e", 100)):
        queue.add(name, rank)
    queue.add("a", 500)  # queued already: it keeps its place
    assert "a" in queue and len(queue) == 5
    assert queue.take(3) == ["c", "e", "a"]
    assert queue.take(10) == ["b", "d"]
    assert not queue and queue.take(1) == []


# --- the planner -----------------------------------------------------------------------------------

def usage(name: str, room: int, held: list[Running], *, cordoned: bool = False) -> NodeUsage:
    n = msgspec.structs.replace(node(name, room), unschedulable=cordoned)
    return NodeUsage(n, True, sum(r.request.memory for r in held), sum(r.request.vcpus for r in held), len(held))


def running(name: str, node_name: str, priority: int, created_at: float = 0.0, size: int = 1) -> Running:
    return Running(name, node_name, Request(BOOKED * size, 1, 0), priority, created_at)


SPEC = VMSpec(name="vip", memory="1Gi")


def test_the_fewest_victims_of_the_lowest_priority() -> None:
    on_a = [running("a1", "a", 5), running("a2", "a", 5)]
    on_b = [running("b1", "b", 0), running("b2", "b", 900)]
    nodes = [usage("a", 2, on_a), usage("b", 2, on_b)]
    chosen = plan(SPEC, 1000, nodes, {"a": on_a, "b": on_b})
    # on b the highest victim would be 0, on a 5: b, and only the one it needs
    assert chosen is not None and (chosen.node, chosen.victims) == ("b", ("b1",))


def test_reprieved_when_not_needed_and_the_newest_of_a_priority_goes_first() -> None:
    held = [running("old", "a", 1, created_at=1.0), running("new", "a", 1, created_at=2.0),
            running("big", "a", 1, created_at=0.5, size=2)]
    nodes = [usage("a", 4, held)]
    chosen = plan(SPEC, 10, nodes, {"a": held})
    # one of the small ones will do; the oldest is given back first, so the newest goes
    assert chosen is not None and chosen.victims == ("new",)
    # a bigger one: the oldest (big) is given back first and the two small ones go, newest first
    two = plan(VMSpec(name="vip", memory="2Gi"), 10, [usage("a", 4, held)], {"a": held})
    assert two is not None and two.victims == ("new", "old")


def test_nothing_of_equal_or_higher_priority_and_no_node_the_filters_refuse() -> None:
    equal = [running("peer", "a", 1000)]
    assert plan(SPEC, 1000, [usage("a", 1, equal)], {"a": equal}) is None
    low = [running("low", "a", 0)]
    assert plan(SPEC, 1000, [usage("a", 1, low, cordoned=True)], {"a": low}) is None  # cordoned: never there
    selective = msgspec.structs.replace(SPEC, node_selector={"disk": "ssd"})
    assert plan(selective, 1000, [usage("a", 1, low)], {"a": low}) is None
    # too big even for an empty node: nothing is evicted for nothing
    assert plan(VMSpec(name="vip", memory="8Gi"), 1000, [usage("a", 2, low)], {"a": low}) is None


# --- the binder ------------------------------------------------------------------------------------

def bound(name: str, node_name: str, priority: int) -> VMI:
    return VMI(name=name, uid=f"uid-{name}", spec=VMSpec(name=name, memory="1Gi"), created_at=0.0,
               phase=Phase.RUNNING, node_name=node_name, priority=priority)


def pending(name: str, class_name: str | None) -> VMI:
    return VMI(name=name, uid=f"uid-{name}", created_at=1.0,
               spec=VMSpec(name=name, memory="1Gi", priority_class_name=class_name))


def condition(bucket: FakeVmis, name: str) -> str:
    return next(c.message for c in bucket.data[name].value.conditions if c.type == "PodScheduled")


async def test_the_binder_preempts_holds_the_room_and_binds_once_the_victim_has_gone() -> None:
    bucket, events = FakeVmis(), list[Event]()
    for v in (bound("a1", "a", 0), bound("a2", "a", 500), bound("b1", "b", 500), bound("b2", "b", 500)):
        bucket.put(v)
    bucket.put(pending("vip", "high"))
    bucket.put(pending("late", None))
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 2), node("b", 2)), events)
    binder.classes = FixedClasses({"high": HIGH})
    try:
        assert not await binder.schedule("vip")
        said = condition(bucket, "vip")
        assert said.startswith("0/2 nodes are available: 2 Insufficient memory.")
        assert said.endswith("Preempting 1 instance(s) of lower priority on node a: a1.")
        victim = bucket.data["a1"].value
        assert victim.evicted and victim.stop_requested  # its VM runs it again elsewhere, as after a drain
        assert not any(bucket.data[n].value.stop_requested for n in ("a2", "b1", "b2"))
        await binder.events.flushed()
        assert [(e.name, e.reason) for e in events] == [("a1", "Preempted"), ("vip", "FailedScheduling")]
        assert "preempted by vip (priority 1000) on node a" in events[0].message
        # while a1 leaves, its room is vip's: what has a lower priority does not take it
        cache.apply(Change("a1", msgspec.structs.replace(victim, phase=Phase.SUCCEEDED), bucket.put(
            msgspec.structs.replace(victim, phase=Phase.SUCCEEDED)).revision))
        assert "vip" in binder._pending  # the victim gone: the preemptor is decided again at once
        assert not await binder.schedule("late")
        assert await binder.schedule("vip")
        placed = bucket.data["vip"].value
        assert placed.node_name == "a" and placed.priority == 1000
        assert binder.index.allocation("a")[2] == 2
    finally:
        await binder.close()
        await binder.events.close()


async def test_no_preemption_for_never_for_equals_and_for_a_class_that_is_not_there() -> None:
    bucket, events = FakeVmis(), list[Event]()
    bucket.put(bound("a1", "a", 0))
    bucket.put(bound("b1", "b", 1000))
    for name, cls in (("polite", "polite"), ("peer", "high"), ("lost", "missing")):
        bucket.put(pending(name, cls))
    binder, _ = await binder_over(bucket, FakeNodes(node("a", 1), node("b", 1)), events)
    binder.classes = FixedClasses({"high": HIGH, "polite": NEVER})
    try:
        assert not await binder.schedule("polite")
        assert condition(bucket, "polite") == "0/2 nodes are available: 2 Insufficient memory."
        assert not await binder.schedule("lost")
        assert condition(bucket, "lost") == "no PriorityClass with name missing was found"
        assert not bucket.data["a1"].value.stop_requested and not bucket.data["b1"].value.stop_requested
        # high (1000) may preempt a1 (0), never b1 (1000)
        assert not await binder.schedule("peer")
        assert condition(bucket, "peer").endswith("on node a: a1.")
        assert not bucket.data["b1"].value.stop_requested
    finally:
        await binder.close()
        await binder.events.close()
