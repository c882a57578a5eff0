"""Cordon, eviction and drain as pure rules: placement skips a cordoned node and says so in
kube-scheduler's words; an evicted instance of a VM that wants it running is run again; drain's plan
refuses what kubectl's refuses, and says what stays behind."""

from __future__ import annotations

import argparse
import json

import msgspec
import pytest

from ctl import cli, draincmd, render
from ctl import nodemarks as ctl_nodemarks
from proto import resources
from proto.api import NodeView
from proto.errors import ApiError
from proto.manifest import parse_instance, parse_manifest_obj
from proto.quantity import parse_bytes
from proto.spec import (
    CloudInitNoCloud,
    ContainerDisk,
    EmptyDisk,
    HostDisk,
    Interface,
    Network,
    PersistentVolumeClaim,
    RunStrategy,
    VMSpec,
    Volume,
    VolumeSource,
)
from proto.state import VM, VMI, MigrationPhase, MigrationState, Node, Phase
from scheduler import nodemaintenance, nodemarks, stopping
from scheduler.capacity import CapacityIndex
from scheduler.placement import place
from scheduler.vmplan import Action, plan, printable_status


def node(name: str, *, cordoned: bool = False) -> Node:
    return Node(name=name, cpus=2, memory=parse_bytes("4Gi"), kvm=False, heartbeat=0.0, started_at=0.0,
                unschedulable=cordoned)


def vmi(name: str, on: str | None = "node1", *sources: VolumeSource, phase: Phase = Phase.RUNNING,
        standalone: bool = False, owner: str | None = None, torn_down: bool = False) -> VMI:
    volumes = [Volume(name=f"v{i}", source=s) for i, s in enumerate(sources)]
    return VMI(name=name, uid=f"uid-{name}", spec=VMSpec(name=name, volumes=volumes), created_at=0.0, phase=phase,
               node_name=on, standalone=standalone, owner=owner, torn_down=torn_down)


def vm(name: str, strategy: RunStrategy) -> VM:
    return VM(spec=VMSpec(name=name, run_strategy=strategy), created_at=0.0)


# --- placement ----------------------------------------------------------------------------------
def test_a_cordoned_node_gets_nothing_new_and_the_reason_counts_it() -> None:
    index = CapacityIndex()
    index.sync_nodes({"node1": node("node1", cordoned=True), "node2": node("node2")}, {"node1": True, "node2": True})
    index.assume("busy", "node2", index.request(vmi("busy", "node2")))  # node1 is the least allocated
    assert place(VMSpec(name="x"), index.candidates(), enough=1).node == "node2"
    index.sync_nodes({"node1": node("node1", cordoned=True), "node2": node("node2", cordoned=True)},
                     {"node1": True, "node2": False})
    refused = place(VMSpec(name="x"), index.candidates())
    assert refused.node is None
    assert refused.message == "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    # uncordoned: a new record, which the index takes as the node changed
    index.sync_nodes({"node1": node("node1"), "node2": node("node2", cordoned=True)}, {"node1": True, "node2": True})
    assert place(VMSpec(name="x"), index.candidates()).node == "node1"


# --- the VM controller ----------------------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "phase", "action"), [
    (RunStrategy.ALWAYS, Phase.SUCCEEDED, Action.DELETE_VMI),
    (RunStrategy.RERUN_ON_FAILURE, Phase.SUCCEEDED, Action.DELETE_VMI),  # not the guest's wish: run again
    (RunStrategy.RERUN_ON_FAILURE, Phase.FAILED, Action.DELETE_VMI),
    (RunStrategy.MANUAL, Phase.SUCCEEDED, Action.NOTHING),
    (RunStrategy.ONCE, Phase.SUCCEEDED, Action.NOTHING),
])
def test_what_follows_an_eviction_is_the_run_strategys(strategy: RunStrategy, phase: Phase, action: Action) -> None:
    ended = msgspec.structs.replace(vmi("a", phase=phase, torn_down=True), evicted=True, stop_requested=True)
    assert plan(vm("a", strategy), ended, node_ready=True) is action
    # the same end without an eviction: RerunOnFailure leaves a guest that powered off alone
    plain = msgspec.structs.replace(ended, evicted=False)
    if strategy is RunStrategy.RERUN_ON_FAILURE and phase is Phase.SUCCEEDED:
        assert plan(vm("a", strategy), plain, node_ready=True) is Action.NOTHING


def test_an_eviction_under_way_prints_as_stopping() -> None:
    evicting = stopping.evicted(vmi("a"), "uid-a", 5.0, None)
    assert evicting is not None
    assert printable_status(vm("a", RunStrategy.ALWAYS), evicting) == "Stopping"


# --- the api's pure rules -------------------------------------------------------------------------
def test_cordoned_changes_only_what_differs() -> None:
    assert nodemaintenance.cordoned(node("n"), True) == node("n", cordoned=True)
    assert nodemaintenance.cordoned(node("n", cordoned=True), True) is None
    assert nodemaintenance.cordoned(node("n", cordoned=True), False) == node("n")


def test_evicted_stops_that_instance_once_and_takes_a_shorter_grace() -> None:
    running = vmi("a")
    first = stopping.evicted(running, "uid-a", 5.0, None)
    assert first is not None and first.evicted and first.stop_requested and first.stop_grace_period is None
    assert stopping.evicted(first, "uid-a", 6.0, None) is None  # asked again: nothing new
    shorter = stopping.evicted(first, "uid-a", 6.0, 3)
    assert shorter is not None and shorter.stop_grace_period == 3
    assert stopping.evicted(running, "another-run", 5.0, None) is None
    assert stopping.evicted(vmi("a", phase=Phase.SUCCEEDED), "uid-a", 5.0, None) is None
    # a VM's own stop under way becomes an eviction: what follows is then the eviction's
    asked = msgspec.structs.replace(running, stop_requested=True)
    assert (stopping.evicted(asked, "uid-a", 5.0, None) or asked).evicted


def test_what_follows_names_who_runs_it_again() -> None:
    a = vmi("a")
    assert nodemaintenance.what_follows(a, vm("a", RunStrategy.ALWAYS)) == "VM a starts it again on another node"
    assert nodemaintenance.what_follows(a, vm("a", RunStrategy.MANUAL)) == \
        "VM a (runStrategy Manual) leaves it stopped"
    assert nodemaintenance.what_follows(vmi("r-x", standalone=True, owner="r"), None) == \
        "VirtualMachineInstanceReplicaSet r replaces it"
    assert "nothing starts it again" in nodemaintenance.what_follows(vmi("s", standalone=True), None)


# --- drain's plan -------------------------------------------------------------------------------
def test_drain_refuses_what_kubectl_would_and_evicts_the_rest() -> None:
    vmis = [vmi("vm-plain", "node1", CloudInitNoCloud(user_data="#cloud-config")),
            vmi("vm-disk", "node1", ContainerDisk(image="testvm")),
            vmi("own", "node1", standalone=True),
            vmi("rs-1", "node1", EmptyDisk(capacity="1Gi"), standalone=True, owner="rs"),
            vmi("elsewhere", "node2"), vmi("ended", "node1", phase=Phase.SUCCEEDED)]
    strict = draincmd.plan(vmis, "node1", force=False, delete_local_data=False)
    assert strict.evict == ["vm-plain"]
    assert strict.refused == {draincmd.UNMANAGED: ["own"], draincmd.LOCAL_DATA: ["rs-1", "vm-disk"]}
    loose = draincmd.plan(vmis, "node1", force=True, delete_local_data=True)
    assert loose.evict == ["own", "rs-1", "vm-disk", "vm-plain"] and not loose.refused


def test_drain_says_what_stays_on_the_node() -> None:
    vmis = [vmi("db", "node1", PersistentVolumeClaim(claim_name="data")),
            vmi("logs", "node1", HostDisk(path="/srv/logs.img"))]
    chosen = draincmd.plan(vmis, "node1", force=False, delete_local_data=False)
    assert chosen.evict == ["db", "logs"]
    assert chosen.warnings == ["vmi/db: its volumes (data) are on node1, so it runs again only once node1 is "
                               "uncordoned", "vmi/logs: its hostDisk files stay on node1"]


def test_drain_waits_for_the_teardown_unless_the_node_cannot_say() -> None:
    vmis = [vmi("a", phase=Phase.SUCCEEDED), vmi("b", phase=Phase.SUCCEEDED, torn_down=True), vmi("c"),
            vmi("d", "node2")]
    assert draincmd.still_there(vmis, "node1", node_ready=True) == ["a", "c"]
    assert draincmd.still_there(vmis, "node1", node_ready=False) == ["c"]


def test_drain_flags_read_as_kubectls() -> None:
    assert [draincmd.duration(t) for t in ("0", "90", "90s", "5m", "1.5h")] == [0, 90, 90, 300, 5400]
    with pytest.raises(argparse.ArgumentTypeError):
        draincmd.duration("5 minutes")
    assert draincmd.grace(-1) is None and draincmd.grace(0) == 0
    with pytest.raises(ApiError):
        draincmd.grace(10**9)


# --- how a cordoned node prints -------------------------------------------------------------------
def test_a_cordoned_node_prints_as_kubectl_prints_it() -> None:
    view = NodeView(node=node("node1", cordoned=True), ready=True, allocated_memory=0, allocated_cpus=0, vmis=0)
    assert "Ready,SchedulingDisabled" in render.nodes([view], wide=False)
    spec = resources.node_object(view)["spec"]
    assert spec["unschedulable"] is True
    assert spec["taints"] == [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    plain = NodeView(node=node("node2"), ready=False, allocated_memory=0, allocated_cpus=0, vmis=0)
    assert "unschedulable" not in resources.node_object(plain)["spec"]
    assert "NotReady " in render.nodes([plain], wide=False)


# --- KubeVirt's evictionStrategy ----------------------------------------------------------------
def strategy_vmi(name: str, strategy: str | None) -> VMI:
    base = vmi(name)
    spec = msgspec.structs.replace(base.spec, eviction_strategy=strategy)
    return msgspec.structs.replace(base, spec=spec)


def bridged(vmi: VMI) -> VMI:
    """On the pod network by bridge binding: it cannot move alive (proto.migrations.not_migratable)."""
    spec = msgspec.structs.replace(vmi.spec, interfaces=[Interface(name="default", binding="bridge")],
                                   networks=[Network(name="default")])
    return msgspec.structs.replace(vmi, spec=spec)


def test_drain_moves_what_is_to_move_alive_and_refuses_what_cannot_unless_eviction_is_disabled() -> None:
    vmis = [strategy_vmi("m", "LiveMigrate"), strategy_vmi("x", "External"),
            strategy_vmi("p", "LiveMigrateIfPossible"), strategy_vmi("n", "None"), strategy_vmi("d", None),
            bridged(strategy_vmi("stuck", "LiveMigrate")), bridged(strategy_vmi("q", "LiveMigrateIfPossible"))]
    strict = draincmd.plan(vmis, "node1", force=False, delete_local_data=False)
    assert strict.evict == ["d", "m", "n", "p", "q"]  # m and p are migrated off; q cannot move, so is stopped
    assert strict.refused == {draincmd.MIGRATE_ONLY: ["stuck", "x"]}
    assert "vmi/stuck: evictionStrategy LiveMigrate: it is to move alive and cannot: cannot migrate VMI which " \
           "does not use masquerade" in "\n".join(strict.warnings)
    assert draincmd.plan(vmis, "node1", force=False, delete_local_data=False, disable_eviction=True).evict == \
        ["d", "m", "n", "p", "q", "stuck", "x"]


def test_a_guest_that_moves_alive_needs_no_leave_to_lose_its_local_data() -> None:
    local = [vmi("moving", "node1", ContainerDisk(image="i")), vmi("stopping", "node1", ContainerDisk(image="i"))]
    local[0] = msgspec.structs.replace(local[0], spec=msgspec.structs.replace(local[0].spec,
                                                                              eviction_strategy="LiveMigrate"))
    chosen = draincmd.plan(local, "node1", force=False, delete_local_data=False)
    assert chosen.evict == ["moving"] and chosen.refused == {draincmd.LOCAL_DATA: ["stopping"]}


@pytest.mark.parametrize("strategy", ["None", "LiveMigrate", "LiveMigrateIfPossible", "External"])
def test_eviction_strategy_is_read_from_a_manifest_and_written_back(strategy: str) -> None:
    body: dict[str, object] = {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "a"},
           "spec": {**body, "evictionStrategy": strategy}}
    spec = parse_instance(json.dumps(doc).encode())
    assert spec.eviction_strategy == strategy
    template = resources.vm_manifest(spec)["spec"]["template"]["spec"]
    assert template["evictionStrategy"] == strategy
    # stored without the field when the manifest says nothing, as every default is
    plain = parse_instance(json.dumps({**doc, "spec": body}).encode())
    assert plain.eviction_strategy is None and b"evictionStrategy" not in msgspec.json.encode(plain)


def test_an_unknown_eviction_strategy_is_refused_by_its_path() -> None:
    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "a"},
           "spec": {"template": {"spec": {"evictionStrategy": "Migrate", "domain": {"devices": {}}}}}}
    with pytest.raises(ApiError) as caught:
        parse_manifest_obj(doc)
    assert caught.value.field == "spec.template.spec.evictionStrategy"


# --- a node deleted as lost ---------------------------------------------------------------------
def test_a_deleted_nodes_instances_are_given_up_once() -> None:
    running = vmi("a")
    given_up = nodemaintenance.node_deleted(running, "uid-a", "node1", 9.0)
    assert given_up is not None
    assert (given_up.phase, given_up.fenced, given_up.finished_at) == (Phase.FAILED, True, 9.0)
    assert "node1 was deleted" in given_up.reason
    assert [(c.type, c.status, c.reason) for c in given_up.conditions] == [("Ready", "False", "NodeDeleted")]
    assert nodemaintenance.node_deleted(given_up, "uid-a", "node1", 10.0) is None  # once
    assert nodemaintenance.node_deleted(running, "uid-b", "node1", 9.0) is None  # another run now
    assert nodemaintenance.node_deleted(vmi("a", "node2"), "uid-a", "node1", 9.0) is None
    # one that ended and waits for a teardown its node will never do: let go, its phase kept
    ended = nodemaintenance.node_deleted(vmi("a", phase=Phase.SUCCEEDED), "uid-a", "node1", 9.0)
    assert ended is not None and (ended.phase, ended.fenced) == (Phase.SUCCEEDED, True)
    # the VM controller then removes it without the node's word, and counts no failure
    assert plan(vm("a", RunStrategy.ALWAYS), given_up, node_ready=True) is Action.DELETE_VMI


def test_a_node_is_deleted_only_once_it_is_not_ready_and_its_ha_instances_failed_over() -> None:
    ha = msgspec.structs.replace(vmi("h"), spec=VMSpec(name="h", high_availability=True))
    assert "is Ready" in (nodemaintenance.deletion_refusal("node1", True, []) or "")
    assert "(h)" in (nodemaintenance.deletion_refusal("node1", False, [ha, vmi("a")]) or "")
    failed_over = msgspec.structs.replace(ha, phase=Phase.FAILED, fenced=True)
    assert nodemaintenance.deletion_refusal("node1", False, [failed_over, vmi("a")]) is None
    assert nodemaintenance.deletion_refusal("node2", False, [ha]) is None  # not that node's


@pytest.mark.parametrize("argv", [["delete", "node", "node1"], ["delete", "nodes", "node1"], ["delete", "no/node1"],
                                  ["delete", "node/node1"]])
def test_delete_node_in_kubectls_spellings(argv: list[str]) -> None:
    args = cli.kubectl_forms(cli.parser().parse_args(argv))
    assert (args.command, args.kind, args.name) == ("delete", "node", "node1")


def test_the_clusters_eviction_strategy_is_each_instances_unless_its_own_says_otherwise() -> None:
    vmis = [strategy_vmi("own-none", "None"), bridged(strategy_vmi("plain", None))]
    chosen = draincmd.plan(vmis, "node1", force=False, delete_local_data=False, cluster_strategy="LiveMigrate")
    assert chosen.evict == ["own-none"] and chosen.refused == {draincmd.MIGRATE_ONLY: ["plain"]}


# --- kubectl label node ---------------------------------------------------------------------------
def labelled(**labels: str) -> Node:
    return msgspec.structs.replace(node("node1"), labels={"kubernetes.io/hostname": "node1", "rack": "r1", **labels},
                                   admin_labels=dict(labels))


def test_an_admins_labels_lie_over_the_handlers_and_only_they_change() -> None:
    once = nodemarks.relabelled(labelled(), {"disk": "ssd"}, [], overwrite=False)
    assert once is not None and once.labels == {"kubernetes.io/hostname": "node1", "rack": "r1", "disk": "ssd"}
    assert once.admin_labels == {"disk": "ssd"}
    assert nodemarks.relabelled(once, {"disk": "ssd"}, [], overwrite=False) is None  # nothing new
    with pytest.raises(ApiError, match="already has a value"):
        nodemarks.relabelled(once, {"disk": "hdd"}, [], overwrite=False)
    again = nodemarks.relabelled(once, {"disk": "hdd"}, [], overwrite=True)
    assert again is not None and again.labels["disk"] == "hdd"
    gone = nodemarks.relabelled(again, {}, ["disk"], overwrite=False)
    assert gone is not None and "disk" not in gone.labels and gone.admin_labels == {}
    for key in ("rack", "kubernetes.io/hostname"):  # the handler's: changed where the handler starts
        with pytest.raises(ApiError, match="handler's"):
            nodemarks.relabelled(once, {key: "x"}, [], overwrite=True)
        with pytest.raises(ApiError, match="handler's"):
            nodemarks.relabelled(once, {}, [key], overwrite=False)


@pytest.mark.parametrize(("argv", "labels", "remove"), [
    (["node", "node1", "disk=ssd", "gpu-"], {"disk": "ssd"}, ["gpu"]),
    (["nodes/node1", "zone=a"], {"zone": "a"}, []),
    (["no", "node1", "empty="], {"empty": ""}, []),
])
def test_label_reads_kubectls_words(argv: list[str], labels: dict[str, str], remove: list[str]) -> None:
    req = ctl_nodemarks.request(argv, overwrite=False)
    assert (req.name, req.labels, req.remove) == ("node1", labels, remove)


@pytest.mark.parametrize("argv", [["vm", "testvm", "a=b"], ["node", "node1"], ["node", "node1", "justakey"]])
def test_label_refuses_what_it_cannot_do(argv: list[str]) -> None:
    with pytest.raises(ApiError):
        ctl_nodemarks.request(argv, overwrite=False)


def test_a_drain_migrates_again_what_failed_to_move_off_since_it_last_looked() -> None:
    def failed_at(name: str, at: float) -> VMI:
        state = MigrationState(migration_uid="m", migration_name="x", source_node="node1", phase=MigrationPhase.FAILED,
                               start_timestamp=at - 1, end_timestamp=at, reason="EOF")
        return msgspec.structs.replace(vmi(name), migration_state=state)

    vmis = [failed_at("a", 100.0), failed_at("b", 50.0), failed_at("c", 100.0), vmi("d")]
    assert draincmd.migrate_again(vmis, {"a", "b", "d"}, 60.0) == [("a", "EOF")]  # c: not one the drain moves
