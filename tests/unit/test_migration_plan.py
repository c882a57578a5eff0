"""The migration controller's decisions (scheduler.migrationplan), and the source launcher's pure parts
(launcher.migration): which disks move, where the domain's paths go, when a stalled migration is
given up."""

from __future__ import annotations

from typing import Any

import libvirt
import msgspec

from launcher.domain import compose_domain_xml, plan_domain
from launcher.migration import Watch, copied_disks, dest_xml, params, time_limit
from launcher.migrationproxy import DISKS, LIBVIRT, MEMORY, SOURCE_SOCKETS, channel_of, handshake
from proto.clusterconfig import MigrationsConfig
from proto.manifest import parse_manifest_obj
from proto.migrations import TARGET_READY_TIMEOUT_S, Migration
from proto.spec import VMSpec
from proto.state import VMI, MigrationOptions, MigrationPhase, MigrationState, Phase
from scheduler.migrationplan import (
    KEEP_FINISHED,
    Step,
    cancelled,
    finished_to_drop,
    must_wait,
    older_first,
    older_first_reason,
    plan,
    started,
)


def vmi(binding: str = "masquerade", **kw: Any) -> VMI:
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
                "spec": {"template": {"spec": {
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}},
                                                     {"name": "ci", "disk": {"bus": "virtio"}},
                                                     {"name": "scratch", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", binding: {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "root", "containerDisk": {"image": "img"}},
                                {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config"}},
                                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}}]}}}}
    spec = parse_manifest_obj(manifest)
    assert isinstance(spec, VMSpec)
    return VMI(name="vm1", uid="u1", spec=spec, created_at=1.0, phase=Phase.RUNNING, node_name="node1", **kw)


ITEM = Migration(name="mig", uid="m1", vmi_name="vm1", created_at=5.0)


def mine(phase: MigrationPhase, **kw: Any) -> VMI:
    state = MigrationState(migration_uid="m1", migration_name="mig", source_node="node1", phase=phase,
                           start_timestamp=100.0, **kw)
    return vmi(migration_state=state)


def test_a_new_migration_starts_or_fails_saying_why() -> None:
    assert plan(ITEM, vmi(), 10.0).step is Step.START
    refused = plan(ITEM, vmi("bridge"), 10.0)
    assert (refused.step, refused.phase) == (Step.MIRROR, MigrationPhase.FAILED)
    assert "masquerade" in refused.reason
    gone = plan(ITEM, None, 10.0)
    assert (gone.step, gone.phase, gone.reason) == (Step.MIRROR, MigrationPhase.FAILED, "VMI vm1 does not exist")
    tuned = MigrationsConfig(options=MigrationOptions(bandwidth_per_migration=64 << 20, allow_auto_converge=True))
    state = started(vmi(), ITEM, 10.0, tuned)
    assert (state.phase, state.source_node, state.migration_uid) == (MigrationPhase.SCHEDULING, "node1", "m1")
    assert state.options == tuned.options  # the cluster's settings as it starts go with it to the source


def under_way(*sources: str) -> list[MigrationState]:
    return [MigrationState(migration_uid=f"m{i}", migration_name=f"x{i}", source_node=node,
                           phase=MigrationPhase.RUNNING, start_timestamp=1.0) for i, node in enumerate(sources)]


def test_kubevirts_limits_hold_a_migration_pending_saying_why() -> None:
    config = MigrationsConfig()  # 5 in the cluster, 2 out of a node
    assert must_wait(under_way("node2", "node3"), "node1", config) is None
    off_node1 = must_wait(under_way("node1", "node1"), "node1", config)
    assert off_node1 is not None and "parallelOutboundMigrationsPerNode 2" in off_node1
    assert must_wait(under_way("node1", "node1"), "node2", config) is None  # another node's may start
    full = must_wait(under_way(*"abcde"), "node1", config)
    assert full is not None and "5 migrations are under way in the cluster" in full
    one = MigrationsConfig(parallel_migrations_per_cluster=1)
    assert must_wait(under_way("node9"), "node1", one) is not None
    # it waits Pending, its record saying why once; a later pass with room starts it
    act = plan(ITEM, vmi(), 10.0, full)
    assert (act.step, act.phase, act.reason) == (Step.MIRROR, MigrationPhase.PENDING, full)
    said = msgspec.structs.replace(ITEM, reason=full)
    assert plan(said, vmi(), 11.0, full).step is Step.NOTHING
    assert plan(said, vmi(), 12.0, None).step is Step.START
    assert plan(ITEM, vmi("bridge"), 10.0, full).phase is MigrationPhase.FAILED  # refused whether or not it waits


def test_pending_migrations_start_oldest_first_unless_the_older_ones_node_holds_it_back() -> None:
    config = MigrationsConfig(parallel_migrations_per_cluster=3)  # 2 out of a node
    first = msgspec.structs.replace(ITEM, name="first", uid="a", created_at=1.0)
    second = msgspec.structs.replace(ITEM, name="second", uid="b", created_at=2.0)
    twin = msgspec.structs.replace(ITEM, name="twin", uid="c", created_at=2.0)  # same time: by name
    waiting = [(first, "node1"), (second, "node2"), (twin, "node3")]
    assert older_first(second, waiting, [], config) == first  # room for one: the oldest takes it
    assert older_first(first, waiting, [], config) is None
    assert older_first(twin, waiting, [], config) == first
    assert older_first(twin, waiting[1:], [], config) == second  # "second" < "twin"
    assert older_first(second, waiting[1:], [], config) is None
    # the oldest's own node is full: it holds back nothing off another node
    assert older_first(second, waiting, under_way("node1", "node1"), config) is None
    assert older_first(twin, waiting, under_way("node1", "node1"), config) == second
    assert older_first(second, [], under_way("a", "b", "c"), config) is None  # the cluster is full: must_wait says so
    said = older_first_reason(first)
    assert said == "waiting: migration first, created before it, starts first"
    # it waits Pending saying so, as for the limits
    act = plan(second, vmi(), 10.0, said)
    assert (act.step, act.phase, act.reason) == (Step.MIRROR, MigrationPhase.PENDING, said)


def test_it_is_placed_then_followed_and_its_record_takes_each_phase() -> None:
    assert plan(ITEM, mine(MigrationPhase.SCHEDULING), 101.0).step is Step.PLACE
    act = plan(ITEM, mine(MigrationPhase.SCHEDULED, target_node="node2"), 101.0)
    assert (act.step, act.phase) == (Step.MIRROR, MigrationPhase.SCHEDULED)
    followed = msgspec.structs.replace(ITEM, phase=MigrationPhase.SCHEDULED, source_node="node1", target_node="node2")
    assert plan(followed, mine(MigrationPhase.SCHEDULED, target_node="node2"), 101.0).step is Step.NOTHING
    done = mine(MigrationPhase.SUCCEEDED, target_node="node2")
    assert plan(followed, done, 102.0).phase is MigrationPhase.SUCCEEDED
    finished = msgspec.structs.replace(followed, phase=MigrationPhase.SUCCEEDED)
    assert plan(finished, done, 103.0).step is Step.NOTHING


def test_a_target_that_never_gets_ready_fails_the_migration() -> None:
    late = plan(ITEM, mine(MigrationPhase.SCHEDULED, target_node="node2"), 100.0 + TARGET_READY_TIMEOUT_S + 1)
    assert late.step is Step.FAIL and "node2 was not ready within" in late.reason


def test_an_instance_that_ends_or_is_replaced_fails_its_migration() -> None:
    taken = msgspec.structs.replace(ITEM, phase=MigrationPhase.RUNNING)
    ended = msgspec.structs.replace(mine(MigrationPhase.RUNNING), phase=Phase.FAILED)
    assert plan(taken, ended, 101.0).phase is MigrationPhase.FAILED
    assert plan(taken, vmi(), 101.0).reason == "VMI vm1 is no longer the instance it was migrating"


def test_a_cancel_fails_what_has_not_begun_to_move_and_aborts_what_has() -> None:
    assert cancelled(mine(MigrationPhase.TARGET_READY), "mig").step is Step.FAIL
    assert cancelled(mine(MigrationPhase.RUNNING), "mig").step is Step.ABORT
    assert cancelled(mine(MigrationPhase.RUNNING, abort_requested=True), "mig").step is Step.NOTHING
    assert cancelled(mine(MigrationPhase.SUCCEEDED), "mig").step is Step.NOTHING
    assert cancelled(mine(MigrationPhase.RUNNING), "another").step is Step.NOTHING


def test_only_the_newest_finished_migrations_of_an_instance_are_kept() -> None:
    items = [msgspec.structs.replace(ITEM, name=f"m{i}", created_at=float(i), phase=MigrationPhase.SUCCEEDED)
             for i in range(KEEP_FINISHED + 2)]
    items.append(msgspec.structs.replace(ITEM, name="running", created_at=0.0))
    assert finished_to_drop(items, "vm1") == ["m0", "m1"]
    assert finished_to_drop(items, "other") == []


def domain_xml() -> str:
    v = vmi()
    paths = {"root": ("/state/nodes/node1/vmis/vm1/root.qcow2", "qcow2"),
             "ci": ("/state/nodes/node1/vmis/vm1/ci.iso", "raw"),
             "scratch": ("/state/nodes/node1/vmis/vm1/scratch.qcow2", "qcow2")}
    return compose_domain_xml(plan_domain(v.spec, uid=v.uid, domain_type="qemu", disk_paths=paths,
                                          taps={"default": "tap0"}, serial_log="/state/nodes/node1/vmis/vm1/serial.log",
                                          macs={}))


def test_the_writable_disks_move_and_every_path_goes_to_the_target_nodes_directory() -> None:
    xml = domain_xml()
    assert copied_disks(xml) == ["vda", "vdc"]  # the containerDisk's overlay and the emptyDisk, not cloud-init's
    moved = dest_xml(xml, "/state/nodes/node1", "/state/nodes/node2")
    assert "/state/nodes/node1/" not in moved and moved.count("/state/nodes/node2/vmis/vm1/") == xml.count(
        "/state/nodes/node1/vmis/vm1/")
    values, flags = params(xml, "/state/nodes/node1/", "/state/nodes/node2")
    assert values[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] == ["vda", "vdc"]
    assert values[libvirt.VIR_MIGRATE_PARAM_URI] == f"unix://{SOURCE_SOCKETS[MEMORY]}"
    assert values[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] == f"unix://{SOURCE_SOCKETS[DISKS]}"
    assert flags & libvirt.VIR_MIGRATE_NON_SHARED_INC and flags & libvirt.VIR_MIGRATE_PEER2PEER
    assert not flags & libvirt.VIR_MIGRATE_POSTCOPY  # KubeVirt's default: pre-copy only
    assert not flags & libvirt.VIR_MIGRATE_AUTO_CONVERGE and libvirt.VIR_MIGRATE_PARAM_BANDWIDTH not in values
    tuned = MigrationOptions(bandwidth_per_migration=(64 << 20) + 1, allow_auto_converge=True)
    values, flags = params(xml, "/state/nodes/node1/", "/state/nodes/node2", tuned)
    assert values[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 65  # MiB/s, rounded up: a limit is never none
    assert flags & libvirt.VIR_MIGRATE_AUTO_CONVERGE


def test_a_stalled_or_overlong_migration_is_given_up() -> None:
    watch = Watch(started=0.0, limit_s=time_limit(64 << 20, 0))
    assert watch.limit_s == 150.0  # under a GiB: a GiB's worth
    assert watch.check(1.0, 1000) is None
    assert watch.check(100.0, 500) is None  # progress
    assert watch.check(100.0 + 150 + 1, 500) == "no progress for 150s"  # KubeVirt's progressTimeout
    patient = Watch(started=0.0, limit_s=time_limit(64 << 20, 0, 800), progress_timeout=300)
    assert patient.limit_s == 800.0 and patient.check(1.0, 1000) is None
    assert patient.check(200.0, 1000) is None and patient.check(302.0, 1000) == "no progress for 300s"
    fast = Watch(started=0.0, limit_s=10.0)
    assert fast.check(11.0, 1) == "not done within 10s"
    assert time_limit(3 << 30, 1 << 30) == 600.0


def test_a_connection_reaches_a_channel_only_with_the_token() -> None:
    token = "ab" * 16
    assert channel_of(handshake(token, LIBVIRT), token) == LIBVIRT
    assert channel_of(handshake(token, b"X"), token) is None  # no such channel
    assert channel_of(handshake("cd" * 16, LIBVIRT), token) is None
    assert channel_of(b"GET / HTTP/1.1\r\n\r\n", token) is None
