"""A node's administration and what it means for placement, against a real nats-server and the real
scheduler, the nodes' part played by the test. Cordon, uncordon and eviction (virtbus drain): a
cordoned node gets nothing new and keeps what runs; an evicted instance of a VM that wants it running
runs again on the other node, with no failure counted; one of a Manual VM stays stopped; a cordon
outlives the node's registering again. A node deleted as lost; evictionStrategy; node labels and
taints; affinity and topology spread through the real binder."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest
from nats.js.api import DeliverPolicy

from proto import subjects
from proto.errors import ApiError, Code
from proto.events import Event
from proto.nodeapi import VERB_REGISTER, Registration
from proto.spec import VMSpec
from proto.state import VMI, Node, Phase
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodeapi import NodeApi
from scheduler.nodewatch import NodeWatch
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

pytestmark = pytest.mark.integration


def manifest(name: str, strategy: str) -> bytes:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": strategy, "template": {"spec": {"domain": {
                           "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}}).encode()


async def until(what: str, check: object, limit: float = 15.0) -> VMI:
    """Poll ``check`` (an async callable returning a VMI or None) until it gives one."""
    deadline = time.monotonic() + limit
    while True:
        found = await check()  # type: ignore[operator]
        if found is not None:
            return found  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def recorded(store: Store) -> list[Event]:
    """Every event recorded so far, oldest first."""
    assert store.records_events
    last = (await store.js.stream_info(subjects.STREAM_EVENTS)).state.last_seq
    sub = await store.js.subscribe(subjects.EVENTS_ALL, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    found = []
    try:
        while last:
            msg = await sub.next_msg(timeout=5)
            found.append(msgspec.json.decode(msg.data, type=Event))
            if msg.metadata.sequence.stream >= last:
                break
    finally:
        await sub.unsubscribe()
    return found


async def put_nodes(store: Store) -> None:
    for name in ("node1", "node2"):
        # labelled as a handler labels its node (handler.__main__.node_labels)
        await store.nodes.put(name, Node(name=name, cpus=2, memory=2**31, kvm=False, heartbeat=time.time(),
                                         started_at=time.time(), labels={"kubernetes.io/hostname": name}))


async def run_as_node(store: Store, name: str) -> VMI:
    """The node's launcher says its instance runs."""
    entry = await store.vmis.require(name, "VMI")
    assert entry.value.node_name is not None
    value = msgspec.structs.replace(entry.value, phase=Phase.RUNNING, started_at=time.time())
    await store.vmis.update(name, value, entry.revision)
    return value


async def stop_as_node(store: Store, name: str, phase: Phase = Phase.SUCCEEDED) -> None:
    """The node's launcher stopped the guest as asked, and the node tore the run down."""
    entry = await store.vmis.require(name, "VMI")
    assert entry.value.stop_requested
    await store.vmis.update(name, msgspec.structs.replace(entry.value, phase=phase, torn_down=True,
                                                          finished_at=time.time()), entry.revision)


@pytest.fixture
async def cluster(store: Store) -> object:
    await put_nodes(store)
    nodes = NodeWatch(store)
    watching = asyncio.create_task(nodes.run())
    scheduler = Scheduler(store, nodes=nodes)
    await scheduler.start()
    try:
        yield Api(store, readiness=nodes.readiness)
    finally:
        await scheduler.stop()
        await cancel_and_wait([watching])


async def bound(store: Store, name: str, not_uid: str | None = None) -> VMI:
    async def check() -> VMI | None:
        entry = await store.vmis.get(name)
        ok = entry is not None and entry.value.node_name is not None and entry.value.uid != not_uid
        return entry.value if entry is not None and ok else None
    return await until(f"{name} bound", check)


async def test_cordon_keeps_new_instances_off_and_what_runs_on(store: Store, cluster: Api) -> None:
    api = cluster
    await api.vm_create(manifest("first", "Always"))
    first = await bound(store, "first")
    await run_as_node(store, "first")
    busy = first.node_name or ""
    other = "node2" if busy == "node1" else "node1"

    assert (await api.maintenance.cordon(json.dumps({"name": other}).encode())).message == f"node/{other} cordoned"
    assert (await api.maintenance.cordon(json.dumps({"name": other}).encode())).message == \
        f"node/{other} already cordoned"
    listed = {v.node.name: v for v in (await api.node_list(b"{}")).items}
    assert listed[other].node.unschedulable and not listed[busy].node.unschedulable
    # least allocated, the other node would have been chosen: it is cordoned, so the busy one is
    await api.vm_create(manifest("second", "Always"))
    assert (await bound(store, "second")).node_name == busy
    assert (await store.vmis.require("first", "VMI")).value.phase is Phase.RUNNING  # what ran runs on

    await api.maintenance.cordon(json.dumps({"name": busy}).encode())
    await api.vm_create(manifest("third", "Always"))

    async def refused() -> VMI | None:
        entry = await store.vmis.get("third")  # the VM controller makes it first
        unbound = entry is not None and any(c.reason == "Unschedulable" for c in entry.value.conditions)
        return entry.value if entry is not None and unbound else None
    unschedulable = await until("third unschedulable", refused)
    message = next(c.message for c in unschedulable.conditions if c.type == "PodScheduled")
    assert message == "0/2 nodes are available: 2 node(s) were unschedulable."
    assert (await api.maintenance.uncordon(json.dumps({"name": other}).encode())).message == \
        f"node/{other} uncordoned"
    assert (await bound(store, "third")).node_name == other  # decided again, within the binder's resync

    events = [e for e in await recorded(store) if e.kind == "Node"]
    assert [(e.name, e.reason) for e in events] == [(other, "NodeNotSchedulable"), (busy, "NodeNotSchedulable"),
                                                     (other, "NodeSchedulable")]


async def test_an_evicted_instance_runs_again_on_the_other_node_without_a_failure(store: Store, cluster: Api) -> None:
    api = cluster
    for name, strategy in (("always", "Always"), ("rerun", "RerunOnFailure"), ("manual", "Manual")):
        await api.vm_create(manifest(name, strategy))
        if strategy == "Manual":
            await api.vm_start(json.dumps({"name": name}).encode())
    old = {name: await bound(store, name) for name in ("always", "rerun", "manual")}
    for name in old:
        await run_as_node(store, name)
    for name, vmi in old.items():  # each to be evicted off its own node
        node = vmi.node_name or ""
        await api.maintenance.cordon(json.dumps({"name": node}).encode())
        # the binder hears of it through its node watch, as kube-scheduler through its informer; a
        # guest's shutdown takes longer than that, which the test's stand-in for the node does not
        await asyncio.sleep(0.5)
        said = (await api.maintenance.evict(json.dumps({"name": name, "gracePeriod": 5}).encode())).message
        follows = "leaves it stopped" if name == "manual" else "starts it again on another node"
        assert said.startswith(f"VMI {name} evicted from node {node}; ") and follows in said
        evicting = (await store.vmis.require(name, "VMI")).value
        assert evicting.evicted and evicting.stop_requested and evicting.stop_grace_period == 5
        await stop_as_node(store, name, Phase.FAILED if name == "rerun" else Phase.SUCCEEDED)
        if name != "manual":
            new = await bound(store, name, not_uid=vmi.uid)
            assert new.node_name != node and not new.evicted
            vm = (await store.vms.require(name, "VM")).value
            assert vm.failures == 0 and vm.next_start_at == 0.0  # a drain is no crash loop
        await api.maintenance.uncordon(json.dumps({"name": node}).encode())
    await asyncio.sleep(1.0)  # the controller had its chance: the Manual VM's instance stays ended
    manual = (await store.vmis.require("manual", "VMI")).value
    assert manual.uid == old["manual"].uid and manual.phase is Phase.SUCCEEDED
    evicted = [e for e in await recorded(store) if e.reason == "Evicted"]
    assert {e.name for e in evicted} == {"always", "rerun", "manual"}


async def test_eviction_and_cordon_refusals_change_nothing(store: Store, cluster: Api) -> None:
    api = cluster
    before = {e.key: e.revision for e in await store.nodes.items()}
    for body, code, path in ((b'{"name": "node9"}', Code.NOT_FOUND, "name"),
                             (b'{"name": "../etc"}', Code.INVALID, "name"),
                             (b'{"name": "node1", "force": true}', None, None)):
        with pytest.raises(ApiError) as caught:
            await api.maintenance.cordon(body)
        if code is not None:
            assert (caught.value.code, caught.value.field) == (code, path)
    assert {e.key: e.revision for e in await store.nodes.items()} == before
    await api.vm_create(manifest("vm1", "Always"))
    vmi = await bound(store, "vm1")
    for body, code in ((b'{"name": "vm1", "gracePeriod": -1}', Code.INVALID),
                       (b'{"name": "nope"}', Code.NOT_FOUND), (b'{"name": "vm1", "grace": 1}', None)):
        with pytest.raises(ApiError) as caught:
            await api.maintenance.evict(body)
        assert code is None or caught.value.code is code
    assert (await store.vmis.require("vm1", "VMI")).value == vmi


async def test_a_cordon_outlives_the_node_registering_again(store: Store) -> None:
    nodes = NodeApi(store)
    body = msgspec.json.encode(Registration(cpus=2, memory=2**30, kvm=False))
    await nodes.register(subjects.nodeapi("node1", VERB_REGISTER), body)
    await Api(store).maintenance.cordon(b'{"name": "node1"}')
    again = await nodes.register(subjects.nodeapi("node1", VERB_REGISTER), body)
    assert again.unschedulable and (await store.nodes.require("node1", "node")).value.unschedulable


async def test_an_instance_that_is_to_move_alive_is_migrated_off_or_refused_unless_told(
        store: Store, cluster: Api) -> None:
    """evictionStrategy LiveMigrate: its eviction is a live migration off the node (KubeVirt's evacuation);
    one that cannot migrate (bridged on the pod network) is refused, as KubeVirt refuses it, until
    ignoreEvictionStrategy (drain --disable-eviction) stops it, and it runs again elsewhere."""
    api = cluster
    for name, binding in (("mig", "masquerade"), ("stuck", "bridge")):
        doc = json.loads(manifest(name, "Always"))
        spec = doc["spec"]["template"]["spec"]
        spec["evictionStrategy"] = "LiveMigrate"
        spec["domain"]["devices"]["interfaces"] = [{"name": "default", binding: {}}]
        spec["networks"] = [{"name": "default", "pod": {}}]
        await api.vm_create(json.dumps(doc).encode())
        await bound(store, name)
        await run_as_node(store, name)
    moving = (await api.maintenance.evict(b'{"name": "mig"}')).message
    assert "is migrating off node" in moving and "(migration kubevirt-evacuation-" in moving, moving
    migrating = (await store.vmis.require("mig", "VMI")).value
    assert not migrating.stop_requested and not migrating.evicted  # it goes on running, and moves
    names = [m.name for m in (await api.migrations.list_all(b"{}")).items if m.vmi_name == "mig"]
    assert len(names) == 1 and moving.endswith(f"(migration {names[0]})")
    assert (await api.maintenance.evict(b'{"name": "mig"}')).message == moving  # asked again: the same one

    vmi = (await store.vmis.require("stuck", "VMI")).value
    with pytest.raises(ApiError) as caught:
        await api.maintenance.evict(b'{"name": "stuck"}')
    assert (caught.value.code, caught.value.field) == (Code.INVALID, "spec.evictionStrategy")
    assert "does not use masquerade" in caught.value.message
    assert not (await store.vmis.require("stuck", "VMI")).value.stop_requested  # nothing changed
    await api.maintenance.cordon(json.dumps({"name": vmi.node_name}).encode())
    await asyncio.sleep(0.5)  # the binder's node watch hears of it
    await api.maintenance.evict(b'{"name": "stuck", "ignoreEvictionStrategy": true}')
    await stop_as_node(store, "stuck")
    assert (await bound(store, "stuck", not_uid=vmi.uid)).node_name != vmi.node_name


async def test_a_node_deleted_as_lost_gives_its_instances_up_and_they_run_elsewhere(store: Store) -> None:
    """kubectl delete node for a node that is gone: refused while it is Ready and while an HA instance
    there has not failed over; once NotReady, its record and lease go, its VM's instance is Failed and
    fenced, and runs again on the other node with no failure counted."""
    clock = [1000.0]
    await put_nodes(store)
    nodes = NodeWatch(store, clock=lambda: clock[0])
    watching = asyncio.create_task(nodes.run())
    scheduler = Scheduler(store, nodes=nodes)
    api = Api(store, readiness=nodes.readiness)
    await scheduler.start()
    try:
        await api.vm_create(manifest("web", "Always"))
        vmi = await bound(store, "web")
        await run_as_node(store, "web")
        lost = vmi.node_name or ""
        alive = "node2" if lost == "node1" else "node1"
        with pytest.raises(ApiError) as caught:
            await api.maintenance.delete(json.dumps({"name": lost}).encode())
        assert caught.value.code is Code.CONFLICT and "is Ready" in caught.value.message

        clock[0] += 20.0  # the lost node silent past NotReady; the other beats on
        record = (await store.nodes.require(alive, "node")).value
        await store.nodes.put(alive, msgspec.structs.replace(record, heartbeat=record.heartbeat + 20))
        await asyncio.sleep(0.3)  # the node watch hears the beat
        listed = {v.node.name: v.ready for v in (await api.node_list(b"{}")).items}
        assert listed == {lost: False, alive: True}

        # an HA instance there that has not failed over: only its lapsed lease may say it is dead
        ha = json.loads(manifest("ha", "Always"))
        ha["metadata"]["annotations"] = {"virtbus.io/high-availability": "true"}
        await api.vm_create(json.dumps(ha).encode())
        ha_vmi = await bound(store, "ha")
        await store.vmis.update("ha", msgspec.structs.replace(ha_vmi, node_name=lost, phase=Phase.RUNNING),
                                (await store.vmis.require("ha", "VMI")).revision)
        with pytest.raises(ApiError) as caught:
            await api.maintenance.delete(json.dumps({"name": lost}).encode())
        assert caught.value.code is Code.CONFLICT and "high-availability VMIs (ha)" in caught.value.message
        await api.vm_delete(b'{"name": "ha"}')
        ha_entry = await store.vmis.require("ha", "VMI")  # the stand-in node: it ended, and is torn down
        await store.vmis.update("ha", msgspec.structs.replace(ha_entry.value, phase=Phase.SUCCEEDED, torn_down=True),
                                ha_entry.revision)

        claims = store.bucket(subjects.BUCKET_IPAM, str)  # its node network, as its registration claimed it
        await claims.create(subjects.ipam_node_cidr(7), lost)
        held = await store.nodes.require(lost, "node")
        await store.nodes.update(lost, msgspec.structs.replace(held.value, pod_cidr="10.244.7.0/24"), held.revision)
        said = (await api.maintenance.delete(json.dumps({"name": lost}).encode())).message
        assert said == f'node "{lost}" deleted; its VMIs given up: web'
        assert await store.nodes.get(lost) is None and await store.node_leases.get(lost) is None
        assert await claims.get(subjects.ipam_node_cidr(7)) is None  # given back, as Kubernetes' node IPAM does
        again = await bound(store, "web", not_uid=vmi.uid)
        assert again.node_name == alive
        vm = (await store.vms.require("web", "VM")).value
        assert vm.failures == 0
        reasons = [(e.kind, e.name, e.reason) for e in await recorded(store)]
        assert ("VirtualMachineInstance", "web", "NodeDeleted") in reasons and ("Node", lost, "RemovingNode") in reasons
        with pytest.raises(ApiError) as caught:
            await api.maintenance.delete(json.dumps({"name": lost}).encode())
        assert caught.value.code is Code.NOT_FOUND
    finally:
        await scheduler.stop()
        await cancel_and_wait([watching])


async def test_the_clusters_eviction_strategy_decides_for_an_instance_that_names_none(store: Store,
                                                                                      cluster: Api) -> None:
    api = cluster
    await api.vm_create(manifest("plain", "Always"))
    await bound(store, "plain")
    kubevirt = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
                "spec": {"configuration": {"evictionStrategy": "External"}}}
    await api.cluster.apply(json.dumps(kubevirt).encode())
    with pytest.raises(ApiError) as caught:
        await api.maintenance.evict(b'{"name": "plain"}')
    assert caught.value.field == "spec.evictionStrategy" and "evictionStrategy External" in caught.value.message
    kubevirt["spec"] = {}  # back to KubeVirt's default, None: evicted
    await api.cluster.apply(json.dumps(kubevirt).encode())
    assert "evicted from node" in (await api.maintenance.evict(b'{"name": "plain"}')).message


async def test_anti_affinity_spreads_a_burst_over_the_nodes_through_the_real_binder(store: Store,
                                                                                   cluster: Api) -> None:
    """Three VMs that keep apart by host, created at once on two nodes: two are bound, one per node,
    and the third waits as Unschedulable with kube-scheduler's reason until one of the others goes."""
    api = cluster

    def spread(name: str) -> bytes:
        doc = json.loads(manifest(name, "Always"))
        template = doc["spec"]["template"]
        template["metadata"] = {"labels": {"app": "web"}}
        template["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
        return json.dumps(doc).encode()

    await asyncio.gather(*(api.vm_create(spread(f"web{i}")) for i in range(3)))

    async def settled() -> VMI | None:
        vmis = [e.value for e in await store.vmis.items()]
        waiting = [v for v in vmis if any(c.reason == "Unschedulable" for c in v.conditions)]
        return waiting[0] if len(vmis) == 3 and len([v for v in vmis if v.node_name]) == 2 and waiting else None
    left_out = await until("two bound and one waiting", settled)
    bound_nodes = sorted(e.value.node_name or "" for e in await store.vmis.items() if e.value.node_name)
    assert bound_nodes == ["node1", "node2"]
    message = next(c.message for c in left_out.conditions if c.type == "PodScheduled")
    assert message == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    gone = next(e.value for e in await store.vmis.items() if e.value.node_name)
    await api.vm_delete(json.dumps({"name": gone.name}).encode())
    await stop_as_node(store, gone.name)
    assert (await bound(store, left_out.name)).node_name == gone.node_name  # its place, once free


async def test_a_label_an_admin_gives_a_node_outlives_its_registration_and_places_vms(store: Store,
                                                                                      cluster: Api) -> None:
    """kubectl label node: a VM selecting disk=ssd waits Unschedulable until a node is so labelled,
    then is bound there; the label outlives the node's registering again; bad input changes nothing."""
    api = cluster
    doc = json.loads(manifest("fast", "Always"))
    doc["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    await api.vm_create(json.dumps(doc).encode())

    async def waiting() -> VMI | None:
        entry = await store.vmis.get("fast")
        ok = entry is not None and any(c.reason == "Unschedulable" for c in entry.value.conditions)
        return entry.value if entry is not None and ok else None
    await until("fast waiting for a node", waiting)
    before = (await store.nodes.require("node2", "node")).revision
    for body in (b'{"name": "node2", "labels": {"kubernetes.io/hostname": "x"}}',  # the handler's
                 b'{"name": "node2", "labels": {"bad key!": "x"}}', b'{"name": "node2"}',
                 b'{"name": "node2", "labels": {"a": "b"}, "remove": ["a"]}', b'{"name": "node2", "color": "red"}'):
        with pytest.raises(ApiError):
            await api.node_marks.label(body)
    assert (await store.nodes.require("node2", "node")).revision == before
    said = await api.node_marks.label(b'{"name": "node2", "labels": {"disk": "ssd"}}')
    assert said.message == "node/node2 labeled"
    assert (await bound(store, "fast")).node_name == "node2"  # decided again within the binder's resync

    registration = msgspec.json.encode(Registration(cpus=2, memory=2**31, kvm=False,
                                                    labels={"kubernetes.io/hostname": "node2"}))
    again = await NodeApi(store).register(subjects.nodeapi("node2", VERB_REGISTER), registration)
    assert again.labels == {"kubernetes.io/hostname": "node2", "disk": "ssd"}
    said = await api.node_marks.label(b'{"name": "node2", "remove": ["disk"]}')
    assert said.message == "node/node2 unlabeled"
    assert (await store.nodes.require("node2", "node")).value.labels == {"kubernetes.io/hostname": "node2"}


async def test_a_taint_keeps_off_what_does_not_tolerate_it_and_outlives_registration(store: Store,
                                                                                      cluster: Api) -> None:
    """kubectl taint node, on both nodes: a VM without a toleration waits Unschedulable with the taint
    named; one tolerating it is bound; the taint outlives the node's registering again; untainted,
    the first is bound too; bad input changes nothing."""
    api = cluster
    for node in ("node1", "node2"):
        said = await api.node_marks.taint(json.dumps({"name": node, "add": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}).encode())
        assert said.message == f"node/{node} tainted"
    before = (await store.nodes.require("node2", "node")).revision
    for body in (b'{"name": "node2", "add": [{"key": "x", "effect": "NoExecute"}]}',
                 b'{"name": "node2", "add": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]}',
                 b'{"name": "node2", "remove": [{"key": "absent"}]}', b'{"name": "node2"}',
                 b'{"name": "node2", "add": [{"key": "x", "effect": "Sometimes"}]}'):
        with pytest.raises(ApiError):
            await api.node_marks.taint(body)
    assert (await store.nodes.require("node2", "node")).revision == before
    await asyncio.sleep(0.5)  # the binder's node watch hears of the taints
    await api.vm_create(manifest("plain", "Always"))
    tolerant = json.loads(manifest("db", "Always"))
    tolerant["spec"]["template"]["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "db",
                                                            "effect": "NoSchedule"}]
    await api.vm_create(json.dumps(tolerant).encode())
    assert (await bound(store, "db")).node_name in ("node1", "node2")

    async def waiting() -> VMI | None:
        entry = await store.vmis.get("plain")
        ok = entry is not None and any(c.reason == "Unschedulable" for c in entry.value.conditions)
        return entry.value if entry is not None and ok else None
    plain = await until("plain waiting", waiting)
    assert next(c.message for c in plain.conditions if c.type == "PodScheduled") == \
        "0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: db}."
    registration = msgspec.json.encode(Registration(cpus=2, memory=2**31, kvm=False))
    again = await NodeApi(store).register(subjects.nodeapi("node1", VERB_REGISTER), registration)
    assert [t.key for t in again.taints] == ["dedicated"]
    said = await api.node_marks.taint(b'{"name": "node1", "remove": [{"key": "dedicated", "effect": "NoSchedule"}]}')
    assert said.message == "node/node1 untainted"
    assert (await bound(store, "plain")).node_name == "node1"  # decided again within the binder's resync


async def test_topology_spread_splits_a_burst_evenly_through_the_real_binder(store: Store, cluster: Api) -> None:
    """Four VMs spread by host with maxSkew 1, created at once on two nodes, one of them busier: two on
    each, where placing by allocation alone would put three on the emptier node."""
    api = cluster
    for i in range(3):  # others, not selected by the constraint, make node2 the busier node
        await store.vmis.create(f"other{i}", VMI(name=f"other{i}", uid=f"o{i}", spec=VMSpec(name=f"other{i}"),
                                                 created_at=time.time(), phase=Phase.RUNNING, node_name="node2",
                                                 standalone=True))
    await asyncio.sleep(0.3)  # the binder's watch has them

    def spread(name: str) -> bytes:
        doc = json.loads(manifest(name, "Always"))
        template = doc["spec"]["template"]
        template["metadata"] = {"labels": {"app": "even"}}
        template["spec"]["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "even"}}}]
        return json.dumps(doc).encode()

    await asyncio.gather(*(api.vm_create(spread(f"even{i}")) for i in range(4)))

    async def all_bound() -> VMI | None:
        vmis = [e.value for e in await store.vmis.items() if e.key.startswith("even")]
        return vmis[0] if len(vmis) == 4 and all(v.node_name for v in vmis) else None
    await until("all four bound", all_bound)
    placed = sorted(e.value.node_name or "" for e in await store.vmis.items() if e.key.startswith("even"))
    assert placed == ["node1", "node1", "node2", "node2"]
