"""Live migrations against a real nats-server and the real scheduler (API, migration controller, binder,
node copies), the nodes' part played by the test through the real node API: a migration is placed on the
other node and holds room there as well as on its source; the target's handler hears of it in its own
node's copies; the two nodes' words move it on, and once moved the instance is bound to its target with
its new address, its record says so and its source's room is free. What cannot move is refused, and a
cancel before the guest moves fails it."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from proto import subjects
from proto.api import NameRequest, encode
from proto.errors import ApiError, Code
from proto.migrations import FINAL, MigrationCreate, MigrationReport
from proto.resources import vmi_object
from proto.spec import VMSpec
from proto.state import VMI, MigrationOptions, MigrationPhase, Phase, VMIInterface
from scheduler import migrationpolicies
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodeapi import NodeApi
from scheduler.nodewatch import NodeWatch
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store
from tests.integration.test_node_admin_and_placement import cluster, put_nodes, recorded, run_as_node, until

pytestmark = pytest.mark.integration
__all__ = ["cluster"]  # the fixture, shared


def vm(name: str, binding: str = "masquerade", node: str | None = None) -> bytes:
    """900Mi: two fit on one of the test's 2 GiB nodes, a third does not. node: pinned there."""
    spec: dict[str, object] = {"domain": {"resources": {"requests": {"memory": "900Mi"}},
                                          "devices": {"interfaces": [{"name": "default", binding: {}}]}},
                               "networks": [{"name": "default", "pod": {}}]}
    if node is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": "Always", "template": {"spec": spec}}}).encode()


async def vmi_where(store: Store, name: str, what: str, check: object) -> VMI:
    async def found() -> VMI | None:
        entry = await store.vmis.get(name)
        return entry.value if entry is not None and check(entry.value) else None  # type: ignore[operator]
    return await until(f"{name}: {what}", found)


async def running(store: Store, api: Api, name: str, binding: str = "masquerade", node: str | None = None) -> VMI:
    await api.vm_create(vm(name, binding, node))
    await vmi_where(store, name, "bound", lambda v: v.node_name is not None)
    return await run_as_node(store, name)


async def say(nodeapi: NodeApi, node: str, vmi: VMI, phase: MigrationPhase, **fields: object) -> MigrationPhase:
    assert vmi.migration_state is not None
    report = MigrationReport(vmi=vmi.name, uid=vmi.uid, migration_uid=vmi.migration_state.migration_uid,
                             phase=phase, **fields)  # type: ignore[arg-type]
    return (await nodeapi.migration(subjects.nodeapi(node, "migration"), encode(report))).phase


def other(node: str | None) -> str:
    return "node2" if node == "node1" else "node1"


async def test_a_migration_holds_room_on_its_target_and_moves_the_instance_there(store: Store, cluster: Api) -> None:
    api, nodeapi = cluster, NodeApi(store)
    for name, address in (("node1", "10.99.0.11"), ("node2", "10.99.0.12")):  # as their registrations said
        entry = await store.nodes.require(name, "node")
        await store.nodes.update(name, msgspec.structs.replace(entry.value, address=address), entry.revision)
    mover = await running(store, api, "mover")
    assert mover.node_name is not None
    source, target = mover.node_name, other(mover.node_name)
    filler = await running(store, api, "filler")
    assert filler.node_name == target  # the least allocated

    made = (await api.migrations.create(encode(MigrationCreate(vmi_name="mover")))).item
    assert made.name.startswith("kubevirt-migrate-vm-") and made.phase is MigrationPhase.PENDING
    placed = await vmi_where(store, "mover", "its target chosen", lambda v: v.migration_state is not None
                             and v.migration_state.phase is MigrationPhase.SCHEDULED)
    assert placed.migration_state is not None and placed.migration_state.target_node == target
    assert placed.node_name == source and placed.phase is Phase.RUNNING  # it runs on where it was
    # the target's handler hears of it in its own node's copies
    copy = await store.node_vmis(target).get(subjects.node_vmi(target, "mover"))
    assert copy is not None and copy.value.vmi.migration_state == placed.migration_state

    # the target holds room: a third VM goes to the source's node, a fourth fits nowhere
    third = await running(store, api, "third")
    assert third.node_name == source
    await api.vm_create(vm("fourth"))
    waiting = await vmi_where(store, "fourth", "unschedulable", lambda v: v.phase is Phase.SCHEDULING)
    assert waiting.node_name is None

    # the nodes move it on; only the target says it is ready, only the source moves it
    ready = {"port": 40000, "node_dir": f"/var/lib/virtbus/nodes/{target}",
             "interfaces": [VMIInterface(name="default", ip_address="10.244.9.7", ip_addresses=["10.244.9.7"])]}
    with pytest.raises(ApiError) as refused:
        await say(nodeapi, source, placed, MigrationPhase.TARGET_READY, **ready)
    assert refused.value.code is Code.FORBIDDEN
    before = await store.vmis.require("mover", "VMI")
    with pytest.raises(ApiError) as unsafe:
        await say(nodeapi, target, placed, MigrationPhase.TARGET_READY, **{**ready, "node_dir": "/x/'><bad"})
    assert unsafe.value.code is Code.INVALID
    assert (await store.vmis.require("mover", "VMI")).revision == before.revision  # nothing changed
    assert await say(nodeapi, target, placed, MigrationPhase.TARGET_READY, **ready) is MigrationPhase.TARGET_READY
    assert await say(nodeapi, source, placed, MigrationPhase.RUNNING) is MigrationPhase.RUNNING
    assert await say(nodeapi, source, placed, MigrationPhase.SUCCEEDED) is MigrationPhase.SUCCEEDED

    moved = (await store.vmis.require("mover", "VMI")).value
    assert (moved.uid, moved.node_name, moved.interfaces[0].ip_address) == (mover.uid, target, "10.244.9.7")
    assert moved.migration_state is not None and moved.migration_state.target is None  # where it listened: over

    async def finished() -> VMI | None:
        item = (await api.migrations.get(encode(NameRequest(name=made.name)))).item
        return moved if item.phase in FINAL else None
    await until("the migration's record finished", finished)
    item = (await api.migrations.get(encode(NameRequest(name=made.name)))).item
    assert (item.phase, item.source_node, item.target_node) == (MigrationPhase.SUCCEEDED, source, target)
    # its copies follow it: the source's goes
    async def source_copy_gone() -> VMI | None:
        gone = await store.node_vmis(source).get(subjects.node_vmi(source, "mover")) is None
        return moved if gone else None
    await until("the source's copy gone", source_copy_gone)
    # the room it held on its source is free: the fourth is bound there now
    fourth = await vmi_where(store, "fourth", "bound", lambda v: v.node_name is not None)
    assert fourth.node_name == source
    events = [(e.name, e.reason, e.message) for e in await recorded(store)]
    assert ("mover", "Migrated", f"The VirtualMachineInstance migrated to node {target}.") in events
    assert ("mover", "Migrating", f"migrating to node {target} ({made.name})") in events


async def test_what_cannot_move_is_refused_and_nothing_is_stored(store: Store, cluster: Api) -> None:
    api = cluster
    await running(store, api, "bridged", binding="bridge")
    bucket = await api.migrations.bucket()
    refusals = [
        (MigrationCreate(vmi_name="bridged"), Code.INVALID, "does not use masquerade"),
        (MigrationCreate(vmi_name="nobody"), Code.NOT_FOUND, "VMI nobody not found"),
        (MigrationCreate(vmi_name="bridged", name="Bad_Name"), Code.INVALID, "DNS-1123"),
    ]
    for request, code, words in refusals:
        with pytest.raises(ApiError) as refused:
            await api.migrations.create(encode(request))
        assert refused.value.code is code and words in refused.value.message, refused.value
    for body in (b'{"vmiName": "bridged", "bogus": 1}', b'{"vmiName": '):
        with pytest.raises(ApiError) as bad:
            await api.migrations.create(body)
        assert bad.value.code is Code.BAD_REQUEST
    assert await bucket.items() == []

    await running(store, api, "mover")
    manifest = json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                           "metadata": {"name": "migration-job"}, "spec": {"vmiName": "mover"}}).encode()
    first = (await api.migrations.apply(manifest)).item
    assert (await api.migrations.apply(manifest)).item.uid == first.uid  # applied again: the same one
    with pytest.raises(ApiError) as twice:
        await api.migrations.create(encode(MigrationCreate(vmi_name="mover")))
    assert twice.value.code is Code.CONFLICT and "in-flight migration detected" in twice.value.message
    changed = manifest.replace(b'"vmiName": "mover"', b'"vmiName": "bridged"')
    with pytest.raises(ApiError) as immutable:
        await api.migrations.apply(changed)
    assert immutable.value.field == "spec.vmiName"


async def test_a_cancel_before_the_guest_moves_fails_the_migration(store: Store, cluster: Api) -> None:
    api = cluster
    await running(store, api, "mover")
    made = (await api.migrations.create(encode(MigrationCreate(vmi_name="mover")))).item
    placed = await vmi_where(store, "mover", "placed", lambda v: v.migration_state is not None
                             and v.migration_state.phase is MigrationPhase.SCHEDULED)
    assert placed.migration_state is not None
    target = placed.migration_state.target_node
    said = (await api.migrations.cancel(encode(NameRequest(name="mover")))).message
    assert said == f"VM mover was scheduled to migrate-cancel (migration {made.name})"
    failed = await vmi_where(store, "mover", "failed", lambda v: v.migration_state is not None
                             and v.migration_state.phase is MigrationPhase.FAILED)
    assert failed.migration_state is not None and failed.migration_state.reason == "the migration was cancelled"
    assert failed.node_name == placed.node_name and failed.phase is Phase.RUNNING
    assert target is not None

    async def target_copy_gone() -> VMI | None:
        return failed if await store.node_vmis(target).get(subjects.node_vmi(target, "mover")) is None else None
    await until("the target's copy gone", target_copy_gone)
    with pytest.raises(ApiError) as none_left:
        await api.migrations.cancel(encode(NameRequest(name="mover")))
    assert none_left.value.code is Code.NOT_FOUND
    # it may be migrated again
    again = (await api.migrations.create(encode(MigrationCreate(vmi_name="mover")))).item
    assert again.phase is MigrationPhase.PENDING
    # a node that is neither side says nothing of it
    current = await vmi_where(store, "mover", "placed again", lambda v: v.migration_state is not None
                              and v.migration_state.migration_uid == again.uid)
    with pytest.raises(ApiError) as stranger:
        await say(NodeApi(store), "node9", current, MigrationPhase.FAILED, reason="no")
    assert stranger.value.code is Code.FORBIDDEN


async def test_no_room_elsewhere_fails_the_migration_saying_why(store: Store, cluster: Api) -> None:
    api = cluster
    mover = await running(store, api, "mover")
    for name in ("a", "b"):  # the other node full
        await running(store, api, name, node=other(mover.node_name))
    made = (await api.migrations.create(encode(MigrationCreate(vmi_name="mover")))).item
    failed = await vmi_where(store, "mover", "failed", lambda v: v.migration_state is not None
                             and v.migration_state.phase is MigrationPhase.FAILED)
    assert failed.migration_state is not None
    assert failed.migration_state.reason == "no node can take it: 0/1 nodes are available: 1 Insufficient memory.", \
        failed.migration_state.reason
    assert failed.node_name == mover.node_name and failed.phase is Phase.RUNNING

    reason = failed.migration_state.reason

    async def record_failed() -> VMI | None:
        item = (await api.migrations.get(encode(NameRequest(name=made.name)))).item
        return failed if item.phase is MigrationPhase.FAILED and item.reason == reason else None
    await until("the record failed too", record_failed)


async def test_the_clusters_limit_holds_a_migration_pending_until_one_ends(store: Store) -> None:
    """KubeVirt CR's spec.configuration.migrations: parallelMigrationsPerCluster 1 lets one move at a
    time; the next waits Pending, its record saying why, and starts once the first ends, before one
    created after it. Each starts
    with the cluster's settings (its bandwidth limit here), as its source launcher will use them."""
    await put_nodes(store)
    nodes = NodeWatch(store)
    watching = asyncio.create_task(nodes.run())
    scheduler = Scheduler(store, nodes=nodes)
    await scheduler.start()
    api = Api(store, readiness=nodes.readiness)
    try:
        cr = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
              "spec": {"configuration": {"migrations": {"parallelMigrationsPerCluster": 1,
                                                        "bandwidthPerMigration": "64Mi"}}}}
        await api.cluster.apply(json.dumps(cr).encode())

        async def heard() -> VMI | None:
            limit = scheduler.config.current.migrations.parallel_migrations_per_cluster
            return VMI(name="x", uid="x", spec=VMSpec(name="x"), created_at=0.0) if limit == 1 else None
        await until("the controllers heard the KubeVirt CR", heard)
        await running(store, api, "first")
        await running(store, api, "second")
        await running(store, api, "third")
        spare = (await store.nodes.require("node1", "node")).value  # room for every migration's target
        await store.nodes.put("node3", msgspec.structs.replace(spare, name="node3", labels={
            "kubernetes.io/hostname": "node3"}, heartbeat=time.time()))

        made = (await api.migrations.create(encode(MigrationCreate(vmi_name="first")))).item
        placed = await vmi_where(store, "first", "placed", lambda v: v.migration_state is not None
                                 and v.migration_state.phase is MigrationPhase.SCHEDULED)
        assert placed.migration_state is not None
        assert placed.migration_state.options.bandwidth_per_migration == 64 << 20
        waits = (await api.migrations.create(encode(MigrationCreate(vmi_name="second")))).item

        async def said_waiting() -> VMI | None:
            item = (await api.migrations.get(encode(NameRequest(name=waits.name)))).item
            return placed if item.phase is MigrationPhase.PENDING and "parallelMigrationsPerCluster 1" in item.reason \
                else None
        await until("the second migration waits, saying why", said_waiting)
        second = (await store.vmis.require("second", "VMI")).value
        assert second.migration_state is None  # not started on its instance
        later = (await api.migrations.create(encode(MigrationCreate(vmi_name="third")))).item

        async def later_waiting() -> VMI | None:
            item = (await api.migrations.get(encode(NameRequest(name=later.name)))).item
            return placed if item.phase is MigrationPhase.PENDING and item.reason else None
        await until("the third migration waits too", later_waiting)

        await api.migrations.delete(encode(NameRequest(name=made.name)))  # the first ends (cancelled)
        started = await vmi_where(store, "second", "its migration started", lambda v: v.migration_state is not None
                                  and v.migration_state.migration_uid == waits.uid)
        assert started.migration_state is not None and not started.migration_state.final
        # the older one took the room: the third still waits, for the cluster's limit
        await asyncio.sleep(0.5)
        assert (await store.vmis.require("third", "VMI")).value.migration_state is None
        item = (await api.migrations.get(encode(NameRequest(name=later.name)))).item
        assert item.phase is MigrationPhase.PENDING
    finally:
        await scheduler.stop()
        await cancel_and_wait([watching])


async def test_a_migration_policy_selecting_the_instance_sets_what_it_moves_with(store: Store, cluster: Api) -> None:
    """KubeVirt's MigrationPolicy through the API: the policy matching the VMI's labels (the most of
    them) gives its migration its settings over the cluster's, and its name; another VMI's gets none."""
    api = cluster
    for name, spec in (("db-policy", {"selectors": {"virtualMachineInstanceSelector": {"workload": "db"}},
                                      "bandwidthPerMigration": "32Mi", "allowAutoConverge": True}),
                       ("db-gold", {"selectors": {"virtualMachineInstanceSelector": {"workload": "db", "tier": "gold"},
                                                  "namespaceSelector": {"kubernetes.io/metadata.name": "default"}},
                                    "completionTimeoutPerGiB": 600})):
        body = {"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
                "metadata": {"name": name}, "spec": spec}
        await api.migration_policies.apply(json.dumps(body).encode())
    listed = await api.migration_policies.list_all(b"{}")
    assert [p.name for p in listed.items] == ["db-gold", "db-policy"]
    with pytest.raises(ApiError) as refused:
        await api.migration_policies.apply(json.dumps({"apiVersion": "migrations.kubevirt.io/v1alpha1",
                                                        "kind": "MigrationPolicy", "metadata": {"name": "pc"},
                                                        "spec": {"selectors": {}, "allowPostCopy": True}}).encode())
    assert refused.value.field == "spec.allowPostCopy"
    watch = await migrationpolicies.watched(store)  # the controller's (one per process)

    async def heard() -> VMI | None:
        return VMI(name="x", uid="x", spec=VMSpec(name="x"), created_at=0.0) if len(watch.entries) == 2 else None
    await until("the controller heard the policies", heard)

    for name, labels in (("gold", {"workload": "db", "tier": "gold"}), ("db", {"workload": "db"}), ("web", {})):
        manifest = json.loads(vm(name))
        manifest["spec"]["template"]["metadata"] = {"labels": labels}
        await api.vm_create(json.dumps(manifest).encode())
        await vmi_where(store, name, "bound", lambda v: v.node_name is not None)
        await run_as_node(store, name)
        await api.migrations.create(encode(MigrationCreate(vmi_name=name)))
        started = await vmi_where(store, name, "its migration started", lambda v: v.migration_state is not None)
        assert started.migration_state is not None
        state = started.migration_state
        if name == "gold":  # both select it; db-gold matches more labels, and sets only the timeout
            assert (state.policy, state.options.completion_timeout_per_gib) == ("db-gold", 600)
            assert state.options.bandwidth_per_migration == 0 and not state.options.allow_auto_converge
        elif name == "db":
            assert (state.policy, state.options.bandwidth_per_migration) == ("db-policy", 32 << 20)
            assert state.options.allow_auto_converge
        else:
            assert (state.policy, state.options) == ("", MigrationOptions())
        await api.migrations.cancel(encode(NameRequest(name=name)))
        await vmi_where(store, name, "its migration over", lambda v: v.migration_state is not None
                        and v.migration_state.final)
    gold = (await store.vmis.require("gold", "VMI")).value
    rendered = vmi_object(gold)["status"]["migrationState"]
    assert rendered["migrationPolicyName"] == "db-gold"
    assert rendered["migrationConfiguration"]["completionTimeoutPerGiB"] == 600
    assert "deleted" in (await api.migration_policies.delete(encode(NameRequest(name="db-gold")))).message
