"""Snapshots and restores against a real nats-server, each role with its own credentials: a volume
placed on node1 is populated by node1's handler (progress on the record, through the node API);
its snapshot is taken by node1 into the object store; a restore onto node2 is populated by node2's
handler with the same bytes; a VM restore swaps new files in. Nodes may report only on their own
volumes and snapshots, and may add snapshot content but not purge it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nats
import nats.js.errors
import pytest

from handler import nodevmis
from handler.volumework import LOOK_EVERY_S, VolumeWork
from proto import snapshotmanifest, subjects
from proto.api import encode
from proto.errors import ApiError, Code
from proto.snapshotapi import VMRestore, VMSnapshotCreate
from proto.snapshots import (
    DEADLINE_EXCEEDED,
    DISCARDED,
    SnapshotPhase,
    SnapshotProgress,
    VolumeProgress,
    VolumeSnapshot,
)
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume
from proto.state import VMI, Node, Phase, VolumePhase
from scheduler.api import Api
from scheduler.nodeapi import NodeApi
from scheduler.nodevmis import NodeVmiMirror
from scheduler.snapshotdeadlines import SnapshotDeadlines
from servicekit.endpoints import serve
from servicekit.nodeclient import NodeApiClient
from servicekit.paths import volume_path
from servicekit.store import Store
from tests.conftest import NatsServer
from tests.integration.test_failover import events

pytestmark = pytest.mark.integration


@dataclass
class Cluster:
    admin: Store
    api: Api
    nodes: dict[str, Store]
    dirs: dict[str, Path]
    workers: dict[str, asyncio.Task[None]]  # each node's handler part that takes snapshots at rest


@pytest.fixture
async def cluster(nats_server: NatsServer, store: Store, tmp_path: Path) -> AsyncIterator[Cluster]:
    control = await Store.connect(nats_server.url, "control", creds=nats_server.creds("control"),
                                  inbox=subjects.inbox_prefix("control"))
    service = await serve(control.nc, name="virtbus-nodeapi", version="0.1.0", description="node api", queue="q",
                          endpoints=NodeApi(control).endpoints())
    nodes, dirs, workers = {}, {}, {}
    work = [asyncio.create_task(NodeVmiMirror(control).run())]  # the leader's copies of each node's VMIs
    try:
        for n in ("node1", "node2"):
            await store.nodes.put(n, Node(name=n, cpus=2, memory=2**30, kvm=False, heartbeat=0.0, started_at=0.0))
            nodes[n] = await Store.connect(nats_server.url, n, creds=nats_server.creds(f"node-{n}"),
                                           inbox=subjects.inbox_prefix("node", n), create=False)
            dirs[n] = tmp_path / n / "volumes"
            worker = VolumeWork(nodes[n], NodeApiClient(nodes[n].nc, n), n, dirs[n])
            workers[n] = asyncio.create_task(worker.run())
            work.append(workers[n])
        yield Cluster(store, Api(control), nodes, dirs, workers)
    finally:
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        for s in nodes.values():
            await s.close()
        await service.stop()
        await control.close()


async def until(what: str, probe: Callable[[], Awaitable[bool]], limit: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def node_sees(node: Store, node_name: str, name: str, phase: Phase) -> bool:
    """Whether the node's cached copies (what its handler's parts read) hold the VMI in this phase."""
    return any(v.name == name and v.phase is phase for v in await nodevmis.vmis_here(node, node_name))


async def volume_phase(store: Store, name: str) -> VolumePhase:
    return (await store.volumes.require(name, "volume")).value.phase


def write_pattern(path: Path, data: bytes, offset: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{data[0]:02x} {offset} {len(data)}", str(path)],
                   check=True, capture_output=True)


def reads(path: Path, offset: int, length: int, byte: int) -> bool:
    done = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P 0x{byte:02x} {offset} {length}", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


async def test_populate_snapshot_and_restore_on_the_other_node(cluster: Cluster) -> None:
    api, admin = cluster.api, cluster.admin
    await api.volumes.create(b'{"name": "data", "size": "64Mi", "node": "node1"}')
    await until("data Ready", lambda: _is(volume_phase(admin, "data"), VolumePhase.READY))
    record = (await admin.volumes.require("data", "volume")).value
    path = volume_path(cluster.dirs["node1"], record)
    assert path.exists() and record.progress.total > 0
    write_pattern(path, b"\xab" * 4096, 1 << 20)  # what a guest would have written

    snap = (await api.snapshots.create(b'{"volume": "data", "name": "s1"}')).item
    assert snap.node == "node1" and snap.phase is SnapshotPhase.PENDING and snap.volume_size == "64Mi"

    async def snap_ready() -> bool:
        s = (await admin.snapshots.require("s1", "snapshot")).value
        assert s.phase is not SnapshotPhase.FAILED, s.reason
        return s.phase is SnapshotPhase.READY

    await until("s1 Ready", snap_ready)
    s1 = (await admin.snapshots.require("s1", "snapshot")).value
    assert s1.taken_by == "handler" and not s1.online and s1.size > 0 and s1.digest.startswith("SHA-256=")
    assert s1.progress.done == s1.progress.total == s1.size
    info = await admin.snapshot_objects.get_info(s1.uid)
    assert info.digest == s1.digest

    # node1 is lost: the volume comes back on node2 from the object store
    restored = (await api.snapshots.restore(b'{"snapshot": "s1", "name": "data2", "node": "node2"}')).item
    assert (restored.size, restored.snapshot, restored.node) == ("64Mi", "s1", "node2")
    await until("data2 Ready", lambda: _is(volume_phase(admin, "data2"), VolumePhase.READY))
    copy = volume_path(cluster.dirs["node2"], (await admin.volumes.require("data2", "volume")).value)
    assert reads(copy, 1 << 20, 4096, 0xAB) and not reads(copy, 0, 4096, 0xAB)

    # a restore is refused for what does not exist or is not ready, with the field
    for bad, field in ((b'{"snapshot": "nope", "name": "x"}', None), (b'{"snapshot": "s1", "name": "data2"}', "name"),
                       (b'{"snapshot": "s1", "name": "x", "node": "nowhere"}', "node"),
                       (b'{"snapshot": "s1", "name": "../x"}', "name")):
        with pytest.raises(ApiError) as err:
            await api.snapshots.restore(bad)
        assert err.value.field == field or err.value.code is Code.NOT_FOUND

    # deleting the snapshot removes its object too
    await api.snapshots.delete(b'{"name": "s1"}')
    with pytest.raises(nats.js.errors.NotFoundError):
        await admin.snapshot_objects.get_info(s1.uid)


async def _is(value: Awaitable[object], wanted: object) -> bool:
    return await value == wanted


async def _volume_is(store: Store, name: str, phase: VolumePhase) -> bool:
    return await volume_phase(store, name) is phase


async def test_vm_snapshot_and_restore_swap_in_new_files(cluster: Cluster) -> None:
    api, admin = cluster.api, cluster.admin
    await api.volumes.create(b'{"name": "root", "size": "32Mi", "node": "node1"}')
    await until("root Ready", lambda: _is(volume_phase(admin, "root"), VolumePhase.READY))
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
          "spec": {"running": False, "template": {"spec": {
              "domain": {"resources": {"requests": {"memory": "64Mi"}},
                         "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
              "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "root"}}]}}}}
    await api.vm_create(json.dumps(vm).encode())
    old = (await admin.volumes.require("root", "volume")).value
    write_pattern(volume_path(cluster.dirs["node1"], old), b"\x11" * 512, 0)
    view = await api.snapshots.vm_create(encode(VMSnapshotCreate(vm="vm1", name="snap1")))
    assert view.item.volumes == {"root": "snap1-root"} and view.parts[0].group == "snap1"
    await until("snap1 Ready", lambda: _vm_ready(api, "snap1"))
    write_pattern(volume_path(cluster.dirs["node1"], old), b"\x22" * 512, 0)  # changed after the snapshot

    # a running VM is not restored
    await admin.vmis.put("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0,
                                    phase=Phase.RUNNING, node_name="node1"))
    with pytest.raises(ApiError) as running:
        await api.snapshots.vm_restore(b'{"snapshot": "snap1"}')
    assert running.value.code is Code.CONFLICT
    await admin.vmis.put("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0,
                                    phase=Phase.SUCCEEDED, node_name="node1"))
    await api.snapshots.vm_restore(encode(VMRestore(snapshot="snap1")))
    swapped = (await admin.volumes.require("root", "volume")).value
    assert swapped.uid != old.uid and swapped.previous_uid == old.uid and swapped.snapshot == "snap1-root"
    await until("root Ready again", lambda: _is(volume_phase(admin, "root"), VolumePhase.READY))
    new = (await admin.volumes.require("root", "volume")).value
    assert new.previous_uid is None
    assert reads(volume_path(cluster.dirs["node1"], new), 0, 512, 0x11)
    # and again onto node2: the VM's volumes move there, as new files with the snapshot's content
    await api.snapshots.vm_restore(encode(VMRestore(snapshot="snap1", node="node2")))
    await until("root Ready on node2", lambda: _is(volume_phase(admin, "root"), VolumePhase.READY))
    moved = (await admin.volumes.require("root", "volume")).value
    assert moved.node == "node2" and reads(volume_path(cluster.dirs["node2"], moved), 0, 512, 0x11)
    with pytest.raises(ApiError) as nowhere:
        await api.snapshots.vm_restore(encode(VMRestore(snapshot="snap1", node="node9")))
    assert nowhere.value.field == "node"


async def _vm_ready(api: Api, name: str) -> bool:
    view = await api.snapshots.vm_get(json.dumps({"name": name}).encode())
    assert view.phase is not SnapshotPhase.FAILED
    return view.phase is SnapshotPhase.READY


async def test_a_node_reports_only_on_its_own_volumes_and_snapshots(cluster: Cluster,
                                                                     nats_server: NatsServer) -> None:
    api, admin = cluster.api, cluster.admin
    await api.volumes.create(b'{"name": "mine", "size": "32Mi", "node": "node1"}')
    await until("mine Ready", lambda: _is(volume_phase(admin, "mine"), VolumePhase.READY))
    uid = (await admin.volumes.require("mine", "volume")).value.uid
    other = NodeApiClient(cluster.nodes["node2"].nc, "node2")
    with pytest.raises(ApiError) as forbidden:
        await other.volume_progress(VolumeProgress(volume="mine", uid=uid, phase=VolumePhase.FAILED, reason="lies"),
                                    patience=5)
    assert forbidden.value.code is Code.FORBIDDEN
    assert await volume_phase(admin, "mine") is VolumePhase.READY
    # a snapshot record is node1's to report on, and only the first taker's: here vm1's launcher
    spec = VMSpec(name="vm1", disks=[Disk(name="mine")],
                  volumes=[Volume(name="mine", source=PersistentVolumeClaim(claim_name="mine"))])
    await admin.vmis.put("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=0.0, phase=Phase.RUNNING,
                                    node_name="node1"))
    await until("node1 sees vm1", lambda: node_sees(cluster.nodes["node1"], "node1", "vm1", Phase.RUNNING))
    await admin.snapshots.create("held", VolumeSnapshot(
        name="held", uid="u-held", volume="mine", volume_uid=uid, volume_size="32Mi", node="node1", created_at=0.0,
        taken_by="vmi/vm1", phase=SnapshotPhase.IN_PROGRESS))
    mine = NodeApiClient(cluster.nodes["node1"].nc, "node1")
    with pytest.raises(ApiError) as forbidden2:
        await other.snapshot_progress(SnapshotProgress(snapshot="held", uid="u-held", taker="handler",
                                                       phase=SnapshotPhase.FAILED), patience=5)
    assert forbidden2.value.code is Code.FORBIDDEN
    with pytest.raises(ApiError) as taken:
        await mine.snapshot_progress(SnapshotProgress(snapshot="held", uid="u-held", taker="handler",
                                                      phase=SnapshotPhase.FAILED), patience=5)
    assert taken.value.code is Code.ALREADY_EXISTS
    await asyncio.sleep(LOOK_EVERY_S * 1.5)  # node1's handler looked again meanwhile, and left it be
    held = (await admin.snapshots.require("held", "snapshot")).value
    assert held.phase is SnapshotPhase.IN_PROGRESS and held.taken_by == "vmi/vm1"
    with pytest.raises(ApiError) as busy:  # its upload would outlive it: no node may purge the store
        await api.snapshots.delete(b'{"name": "held"}')
    assert busy.value.code is Code.CONFLICT
    # its launcher ends before it is done: node1's handler takes it over, from the volume now at rest
    await admin.vmis.put("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=0.0, phase=Phase.FAILED,
                                    node_name="node1"))

    async def taken_over() -> bool:
        s = (await admin.snapshots.require("held", "snapshot")).value
        return s.phase is SnapshotPhase.READY and s.taken_by == "handler"

    await until("held taken over and Ready", taken_over)
    # a node adds snapshot content, but purges nothing of the store (nor any other stream)
    node = cluster.nodes["node1"]
    await node.snapshot_objects.put("from-node1", b"bytes")
    with pytest.raises(nats.errors.Error):
        await node.js.purge_stream(subjects.object_stream(subjects.OBJECT_STORE_SNAPSHOTS))
    assert (await admin.snapshot_objects.get("from-node1")).data == b"bytes"


async def test_a_snapshot_naming_another_file_is_refused_at_restore(cluster: Cluster, tmp_path: Path) -> None:
    """A node writes its snapshots' bytes: a qcow2 whose backing file is one of the restoring node's
    files would copy that file into the volume. The restore fails with the reason instead."""
    evil = tmp_path / "evil.qcow2"
    await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                                             "raw", str(evil), "1M"], check=True)
    admin = cluster.admin
    info = await admin.snapshot_objects.put("evil-uid", evil.read_bytes())
    await admin.snapshots.create("evil", VolumeSnapshot(
        name="evil", uid="evil-uid", volume="gone", volume_uid="gone-uid", volume_size="32Mi", node="node1",
        created_at=0.0, phase=SnapshotPhase.READY, taken_by="handler", size=int(info.size or 0),
        digest=str(info.digest)))
    await cluster.api.snapshots.restore(b'{"snapshot": "evil", "name": "stolen", "node": "node2"}')
    await until("stolen Failed", lambda: _is(volume_phase(admin, "stolen"), VolumePhase.FAILED))
    volume = (await admin.volumes.require("stolen", "volume")).value
    assert "backing" in volume.reason or "another" in volume.reason or "own" in volume.reason, volume.reason
    assert not volume_path(cluster.dirs["node2"], volume).exists()


async def test_a_vm_snapshot_not_taken_by_its_failure_deadline_fails_and_says_why(cluster: Cluster) -> None:
    """KubeVirt's spec.failureDeadline: node1 goes down with a VM's volume, so nothing takes its snapshot;
    past the deadline it is Failed, with the reason and a warning event. One taken in time stays Ready;
    one with no deadline (0) waits on."""
    api, admin = cluster.api, cluster.admin
    for volume, node in (("lost", "node1"), ("kept", "node2")):
        await api.volumes.create(json.dumps({"name": volume, "size": "32Mi", "node": node}).encode())
        await until(f"{volume} Ready", partial(_volume_is, admin, volume, VolumePhase.READY))
        await api.vm_create(json.dumps({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": f"vm-{volume}"},
            "spec": {"running": False, "template": {"spec": {
                "domain": {"resources": {"requests": {"memory": "64Mi"}},
                           "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
                "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": volume}}]}}}}).encode())
    await api.vm_create(json.dumps({  # one disk on each node
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm-both"},
        "spec": {"running": False, "template": {"spec": {
            "domain": {"resources": {"requests": {"memory": "64Mi"}},
                       "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}},
                                             {"name": "data", "disk": {"bus": "virtio"}}]}},
            "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "lost"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "kept"}}]}}}}).encode())
    cluster.workers["node1"].cancel()  # node1 is down: nothing there copies a snapshot now
    await asyncio.gather(cluster.workers["node1"], return_exceptions=True)
    deadlines = asyncio.create_task(SnapshotDeadlines(admin).run())  # the leader's part
    try:
        for vm, deadline in (("vm-lost", "2s"), ("vm-kept", "2s"), ("vm-lost", "0s"), ("vm-both", "2s")):
            asked = snapshotmanifest.parse({  # as a user applies it: KubeVirt's VirtualMachineSnapshot
                "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                "metadata": {"name": f"snap-{vm}-{deadline}"},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm},
                         "failureDeadline": deadline}})
            await api.snapshots.vm_create(encode(asked))
        await until("snap-vm-kept-2s Ready", lambda: _vm_ready(api, "snap-vm-kept-2s"), limit=2.0)
        view = await api.snapshots.vm_get(b'{"name": "snap-vm-lost-2s"}')
        assert view.phase is SnapshotPhase.PENDING and view.item.failure_deadline_s == 2.0

        async def failed() -> bool:
            return (await api.snapshots.vm_get(b'{"name": "snap-vm-lost-2s"}')).phase is SnapshotPhase.FAILED

        await until("snap-vm-lost-2s Failed", failed, limit=10.0)
        part = (await admin.snapshots.require("snap-vm-lost-2s-lost", "snapshot")).value
        assert part.reason == "snapshot deadline exceeded: not taken within 2s (failureDeadline)"
        assert part.finished_at is not None and part.finished_at - view.item.created_at >= 2.0
        said = [e for e in await events(admin, "VirtualMachineSnapshot", "snap-vm-lost-2s")]
        assert [(e.type, e.reason) for e in said] == [("Warning", "SnapshotDeadlineExceeded")]
        assert "still pending: snap-vm-lost-2s-lost" in said[0].message
        # KubeVirt deletes a VM snapshot's content at its deadline: the copy node2 took in time is
        # discarded, its object deleted, and the record says why
        both = (await admin.vm_snapshots.require("snap-vm-both-2s", "VM snapshot")).value
        copied = (await admin.snapshots.require(both.volumes["kept"], "snapshot")).value
        assert copied.node == "node2"

        async def discarded() -> bool:
            part = (await admin.snapshots.require(both.volumes["kept"], "snapshot")).value
            return part.phase is SnapshotPhase.FAILED

        await until("the copy on node2 discarded", discarded, limit=10.0)
        part = (await admin.snapshots.require(both.volumes["kept"], "snapshot")).value
        assert part.reason.endswith(DISCARDED) and part.reason.startswith(DEADLINE_EXCEEDED), part.reason
        with pytest.raises(nats.js.errors.NotFoundError):
            await admin.snapshot_objects.get_info(part.uid)
        assert (await api.snapshots.vm_get(b'{"name": "snap-vm-both-2s"}')).phase is SnapshotPhase.FAILED
        await asyncio.sleep(1.0)
        assert (await api.snapshots.vm_get(b'{"name": "snap-vm-kept-2s"}')).phase is SnapshotPhase.READY
        kept = (await admin.vm_snapshots.require("snap-vm-kept-2s", "VM snapshot")).value
        for name in kept.volumes.values():  # taken in time: its copy stays
            await admin.snapshot_objects.get_info((await admin.snapshots.require(name, "snapshot")).value.uid)
        assert (await api.snapshots.vm_get(b'{"name": "snap-vm-lost-0s"}')).phase is SnapshotPhase.PENDING
        # a Failed snapshot is deleted as any other; the one with no deadline still waits for node1
        await api.snapshots.vm_delete(b'{"name": "snap-vm-lost-2s"}')
        assert await admin.snapshots.get("snap-vm-lost-2s-lost") is None
        # a deadline that is no duration is refused, also written on the bus by hand
        for body, field in ((b'{"vm": "vm-kept", "name": "x", "failureDeadlineS": -1}', "failureDeadlineS"),
                            (b'{"vm": "vm-kept", "name": "x", "failureDeadlineS": "5m"}', "failureDeadlineS")):
            with pytest.raises(ApiError) as bad:
                await api.snapshots.vm_create(body)
            assert bad.value.field == field, bad.value
        assert await admin.vm_snapshots.get("x") is None
    finally:
        deadlines.cancel()
        await asyncio.gather(deadlines, return_exceptions=True)
