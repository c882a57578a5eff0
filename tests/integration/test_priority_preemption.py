"""PriorityClasses and preemption against a real nats-server and the real scheduler, the nodes' part
played by the test: two full nodes of low-priority VMs; a high-priority VM preempts one of them (evicted,
its VM runs it again once there is room), holds the room while it leaves so that nothing of lower
priority takes it, and is bound there; a class whose policy is Never, or an equal priority, preempts
nothing; the classes' API refuses what Kubernetes refuses and changes nothing then."""

from __future__ import annotations

import json

import pytest

from proto.errors import ApiError, Code
from proto.state import VMI, Phase
from scheduler.api import Api
from servicekit.store import Store
from tests.integration.test_node_admin_and_placement import cluster, recorded, run_as_node, stop_as_node, until

pytestmark = pytest.mark.integration
__all__ = ["cluster"]  # the fixture, shared


def vm(name: str, priority_class: str | None) -> bytes:
    """900Mi: two fit on one of the test's 2 GiB nodes, a third does not."""
    spec: dict[str, object] = {"domain": {"devices": {}, "resources": {"requests": {"memory": "900Mi"}}}}
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": "Always", "template": {"spec": spec}}}).encode()


def priority_class(name: str, value: object, **fields: object) -> bytes:
    return json.dumps({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                       "value": value, **fields}).encode()


async def vmi_where(store: Store, name: str, what: str, check: object) -> VMI:
    async def found() -> VMI | None:
        entry = await store.vmis.get(name)
        return entry.value if entry is not None and check(entry.value) else None  # type: ignore[operator]
    return await until(f"{name}: {what}", found)


def scheduled(vmi: VMI) -> str:
    return next((c.message for c in vmi.conditions if c.type == "PodScheduled"), "")


async def test_a_higher_priority_vm_preempts_one_of_lower_priority(store: Store, cluster: Api) -> None:
    api = cluster
    await api.priority_classes.apply(priority_class("low", 10, description="batch work"))
    await api.priority_classes.apply(priority_class("high", 1000))
    await api.priority_classes.apply(priority_class("polite", 1000, preemptionPolicy="Never"))
    lows = [f"low{i}" for i in range(4)]
    for name in lows:
        await api.vm_create(vm(name, "low"))
    for name in lows:
        placed = await vmi_where(store, name, "bound", lambda v: v.node_name is not None)
        assert placed.priority == 10
        await run_as_node(store, name)

    # Never: it waits, and nothing is preempted for it
    await api.vm_create(vm("polite", "polite"))
    waiting = await vmi_where(store, "polite", "unschedulable", lambda v: v.phase is Phase.SCHEDULING)
    assert scheduled(waiting) == "0/2 nodes are available: 2 Insufficient memory."

    await api.vm_create(vm("vip", "high"))
    # its condition says it preempts, then (decided again on its own change) that it waits for the victim
    vip = await vmi_where(store, "vip", "waiting for its victim", lambda v: "preempted instance" in scheduled(v))
    victims = [name for name in lows if (await store.vmis.require(name, "VMI")).value.stop_requested]
    assert len(victims) == 1, victims
    victim = (await store.vmis.require(victims[0], "VMI")).value
    assert victim.evicted and scheduled(vip) == ("0/2 nodes are available: 2 Insufficient memory. Waiting for 1 "
                                                 f"preempted instance(s) to leave node {victim.node_name}: "
                                                 f"{victim.name}.")
    # one of equal priority to the others has no one to preempt; it waits
    await api.vm_create(vm("late", "low"))
    late = await vmi_where(store, "late", "unschedulable", lambda v: v.phase is Phase.SCHEDULING)
    assert "Preempting" not in scheduled(late)

    await stop_as_node(store, victim.name)  # the victim's guest shut down; the room is vip's
    placed = await vmi_where(store, "vip", "bound", lambda v: v.node_name is not None)
    assert placed.node_name == victim.node_name and placed.priority == 1000
    # the victim's VM runs it again (no failure counted), and it waits for room like any other
    again = await vmi_where(store, victim.name, "run again", lambda v: v.uid != victim.uid)
    assert again.node_name is None and not again.evicted
    assert (await store.vms.require(victim.name, "VM")).value.failures == 0
    for name in ("polite", "late"):
        assert (await store.vmis.require(name, "VMI")).value.node_name is None
    events = await recorded(store)
    assert [(e.name, e.reason) for e in events if e.reason == "Preempted"] == [(victim.name, "Preempted")]
    assert any(e.name == "vip" and e.message.endswith(f"Preempting 1 instance(s) of lower priority on node "
                                                      f"{victim.node_name}: {victim.name}.") for e in events)


async def test_the_classes_api(store: Store, cluster: Api) -> None:
    api = cluster
    made = (await api.priority_classes.apply(priority_class("usual", 5, globalDefault=True))).item
    assert made.global_default and made.preemption_policy == "PreemptLowerPriority"
    listed = [c.name for c in (await api.priority_classes.list_all(b"{}")).items]
    assert listed == ["system-cluster-critical", "system-node-critical", "usual"]
    assert (await api.priority_classes.get(b'{"name": "system-node-critical"}')).item.value == 2_000_001_000
    bucket = await api.priority_classes.bucket()
    before = {e.key: e.revision for e in await bucket.items()}
    refusals = (
        (priority_class("usual", 6), Code.INVALID, "value"),  # immutable
        (priority_class("other", 1, globalDefault=True), Code.INVALID, "globalDefault"),  # one default
        (priority_class("system-mine", 1), Code.INVALID, "metadata.name"),
        (priority_class("huge", 2_000_000_000), Code.INVALID, "value"),
        (priority_class("usual", "5"), Code.BAD_REQUEST, "value"),
        (b'{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", ', Code.BAD_REQUEST, None),
        (b'{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "x"}}',
         Code.INVALID, "value"),
    )
    for body, code, field in refusals:
        with pytest.raises(ApiError) as err:
            await api.priority_classes.apply(body)
        assert err.value.code is code, (body, err.value)
        if field is not None:
            assert err.value.field == field, (body, err.value)
    assert {e.key: e.revision for e in await bucket.items()} == before  # nothing changed
    with pytest.raises(ApiError) as err:
        await api.priority_classes.delete(b'{"name": "system-cluster-critical"}')
    assert err.value.code is Code.INVALID
    with pytest.raises(ApiError) as err:
        await api.priority_classes.delete(b'{"name": "nope"}')
    assert err.value.code is Code.NOT_FOUND
    # the global default's priority goes to an instance naming no class; one naming a missing class waits
    await api.vm_create(vm("plain", None))
    assert (await vmi_where(store, "plain", "bound", lambda v: v.node_name is not None)).priority == 5
    await api.vm_create(vm("lost", "missing"))
    lost = await vmi_where(store, "lost", "unschedulable", lambda v: v.phase is Phase.SCHEDULING)
    assert scheduled(lost) == "no PriorityClass with name missing was found"
    await api.priority_classes.apply(priority_class("missing", 1))
    assert (await vmi_where(store, "lost", "bound", lambda v: v.node_name is not None)).priority == 1
    assert (await api.priority_classes.delete(b'{"name": "usual"}')).message.startswith("priorityclass usual deleted")
