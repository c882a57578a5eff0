"""Volumes through the API and the binder against a real nats-server: made, listed, refused while a
VM uses them, made with a VM's dataVolumeTemplates and deleted with it; a VM goes where its volumes
are, a new volume stays on its first consumer's node, and volumes on two nodes are unschedulable
with the reason. The node's side (files) is handler.volumefiles, checked against a real directory."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
import pytest

from handler import nodevmis
from handler.volumefiles import VolumeFiles
from launcher.disks import grow_volume, image_virtual_size, make_volume
from proto.errors import ApiError, Code
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume
from proto.state import VMI, Node, Phase, Progress, VolumePhase
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodevmis import NodeVmiMirror
from servicekit.cancelling import cancel_and_wait
from servicekit.paths import volume_path
from servicekit.store import Store

pytestmark = pytest.mark.integration


def manifest(name: str, *claims: str, template: str | None = None, running: bool = False) -> bytes:
    tspec = {"domain": {"resources": {"requests": {"memory": "64Mi"}},
                        "devices": {"disks": [{"name": c, "disk": {"bus": "virtio"}} for c in claims]}},
             "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]}
    spec: dict[str, object] = {"running": running, "template": {"spec": tspec}}
    if template:
        spec["dataVolumeTemplates"] = [{"metadata": {"name": template}, "spec": {
            "source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}}]
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": spec}).encode()


async def test_volume_verbs_and_a_vms_own_volumes(store: Store) -> None:
    api = Api(store)
    made = (await api.volumes.create(b'{"name": "disk1", "size": "1Gi"}')).item
    assert (made.name, made.size, made.node, made.image) == ("disk1", "1Gi", None, None)
    with pytest.raises(ApiError) as dup:
        await api.volumes.create(b'{"name": "disk1", "size": "1Gi"}')
    assert dup.value.code is Code.ALREADY_EXISTS
    for bad, field in ((b'{"name": "../x", "size": "1Gi"}', "name"), (b'{"name": "x", "size": "9Ti"}', "size"),
                       (b'{"name": "x", "size": "1Gi", "node": "nowhere"}', "node"),
                       (b'{"name": "x", "size": "1Gi", "surprise": 1}', None)):
        with pytest.raises(ApiError) as err:
            await api.volumes.create(bad)
        assert err.value.field == field or err.value.code is Code.BAD_REQUEST
    assert [v.name for v in (await api.volumes.list_all(b"{}")).items] == ["disk1"]

    # a VM using a volume that does not exist is refused with the field; one that exists is taken
    with pytest.raises(ApiError) as missing:
        await api.vm_create(manifest("vm1", "nope"))
    assert missing.value.code is Code.INVALID and "persistentVolumeClaim" in (missing.value.field or "")
    await api.vm_create(manifest("vm1", "disk1", "own", template="own"))
    own = (await api.volumes.get(b'{"name": "own"}')).item
    assert own.owner_vm == "vm1" and own.size == "64Mi"
    with pytest.raises(ApiError) as busy:
        await api.volumes.delete(b'{"name": "disk1"}')
    assert busy.value.code is Code.CONFLICT and "vm1" in busy.value.message
    ack = await api.vm_delete(b'{"name": "vm1"}')
    assert "own" in ack.message
    names = [v.name for v in (await api.volumes.list_all(b"{}")).items]
    assert names == ["disk1"], "the VM's own volume goes with it, the other stays"
    await api.volumes.delete(b'{"name": "disk1"}')
    assert (await api.volumes.list_all(b"{}")).items == []


async def bound_node(store: Store, name: str) -> VMI:
    deadline = time.monotonic() + 10
    while True:
        entry = await store.vmis.get(name)
        if entry is not None and (entry.value.node_name or entry.value.phase is Phase.SCHEDULING):
            return entry.value
        assert time.monotonic() < deadline, f"{name} never decided"
        await asyncio.sleep(0.1)


async def test_a_vm_goes_where_its_volumes_are(store: Store) -> None:
    now = time.time()
    for name in ("node1", "node2"):  # both Ready: only the volumes decide
        await store.nodes.put(name, Node(name=name, cpus=4, memory=2**33, kvm=False, heartbeat=now, started_at=0.0))
    api = Api(store)
    await api.volumes.create(b'{"name": "pinned", "size": "1Gi", "node": "node2"}')
    await api.volumes.create(b'{"name": "fresh", "size": "1Gi"}')
    await api.volumes.create(b'{"name": "elsewhere", "size": "1Gi", "node": "node1"}')
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        for name, claims in (("a", ("pinned", "fresh")), ("b", ("fresh",)), ("c", ("pinned", "elsewhere"))):
            await api.vm_create(manifest(name, *claims, running=True))
            await bound_node(store, name)  # one after the other: b follows where a put "fresh"
        a, b, c = [await bound_node(store, n) for n in "abc"]
        assert a.node_name == "node2", "bound where its pinned volume is"
        assert (await store.volumes.require("fresh", "volume")).value.node == "node2", "a new volume stays put"
        assert b.node_name == "node2", "a later VM follows the volume its first consumer placed"
        assert c.node_name is None and "different nodes" in c.conditions[-1].message
    finally:
        await scheduler.stop()


async def test_the_node_removes_a_deleted_volumes_file_once_unused(store: Store, tmp_path: Path) -> None:
    await store.nodes.put("node1", Node(name="node1", cpus=4, memory=2**33, kvm=False, heartbeat=time.time(),
                                        started_at=0.0))
    api = Api(store)
    keep = (await api.volumes.create(b'{"name": "keep", "size": "1Gi", "node": "node1"}')).item
    gone = (await api.volumes.create(b'{"name": "gone", "size": "1Gi", "node": "node1"}')).item
    files = {v.name: volume_path(tmp_path, v) for v in (keep, gone)}
    for path in files.values():
        path.write_bytes(b"qcow2")
    stray = tmp_path / ".gone-part.qcow2.part"  # a copy a killed launcher left half made: not a volume
    stray.write_bytes(b"x")
    spec = VMSpec(name="user", disks=[Disk(name="gone")],
                  volumes=[Volume(name="gone", source=PersistentVolumeClaim(claim_name="gone"))])
    mirror = asyncio.create_task(NodeVmiMirror(store).run())  # the leader's copies of the node's VMIs
    try:
        await store.vmis.create("user", VMI(name="user", uid="u", spec=spec, created_at=0.0,
                                            phase=Phase.RUNNING, node_name="node1"))
        node = VolumeFiles(store, "node1", tmp_path)
        await until_here(store, {"user"})
        await store.volumes.delete("gone")
        assert await node.sweep() == [] and files["gone"].exists(), "still used by an instance here"
        entry = await store.vmis.require("user", "VMI")
        await store.vmis.delete("user", entry.revision)
        await until_here(store, set())
        assert await node.sweep() == [files["gone"]]
        assert files["keep"].exists() and stray.exists() and not files["gone"].exists()
    finally:
        await cancel_and_wait([mirror])  # a plain cancel can be lost to a reply


async def until_here(store: Store, names: set[str]) -> None:
    """Until node1's cached copies name exactly these VMIs (the handler's parts read that cache)."""
    for _ in range(100):
        if {v.name for v in await nodevmis.vmis_here(store, "node1")} == names:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node1's VMI copies never became {names}")


async def test_a_volume_grows_and_never_shrinks(store: Store, tmp_path: Path) -> None:
    """The API grows the record and says who sees it when; the launcher grows the file before the next
    start (real qemu-img)."""
    api = Api(store)
    small = (await api.volumes.create(b'{"name": "growing", "size": "64Mi"}')).item
    path = volume_path(tmp_path, small)
    await make_volume(small, path, images=store.images, cache_dir=tmp_path / "images")
    assert image_virtual_size(path) == 64 << 20
    with pytest.raises(ApiError) as shrink:
        await api.volumes.resize(b'{"name": "growing", "size": "32Mi"}')
    assert shrink.value.code is Code.INVALID and shrink.value.field == "size"
    with pytest.raises(ApiError) as huge:
        await api.volumes.resize(b'{"name": "growing", "size": "9Ti"}')
    assert huge.value.field == "size"
    reply = await api.volumes.resize(b'{"name": "growing", "size": "128Mi"}')
    grown = reply.item
    assert reply.message == "volume/growing resized to 128Mi; a VM using it sees it at its next start"
    assert (await store.volumes.require("growing", "volume")).value.size == "128Mi"
    assert await grow_volume(grown, path) and image_virtual_size(path) == 128 << 20
    assert not await grow_volume(grown, path)  # the next start: nothing to do

    # a guest running with it has it grown under it by its launcher (launcher.volumegrowth), at once
    spec = VMSpec(name="writer", disks=[Disk(name="d")],
                  volumes=[Volume(name="d", source=PersistentVolumeClaim(claim_name="growing"))])
    await store.vmis.create("writer", VMI(name="writer", uid="w1", spec=spec, created_at=time.time(),
                                          phase=Phase.RUNNING, node_name="node1"))
    reply = await api.volumes.resize(b'{"name": "growing", "size": "192Mi"}')
    assert reply.message == "volume/growing resized to 192Mi; the guest of VM writer sees it now"


async def test_a_deleted_vms_volume_goes_even_while_its_node_writes_to_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # the node writes a populating volume's progress every so often: a delete that met one of those
    # writes skipped the volume, and with its VM's record gone nothing deleted it afterwards
    api = Api(store)
    await api.vm_create(manifest("vm2", "own2", template="own2"))
    delete = store.volumes.delete
    raced: list[str] = []

    async def node_writes_first(key: str, revision: int | None = None) -> None:
        if key == "own2" and len(raced) < 3:  # three writes land between the read and the delete
            raced.append(key)
            await store.volumes.mutate(key, lambda v: msgspec.structs.replace(
                v, phase=VolumePhase.POPULATING, progress=Progress(done=len(raced), total=10)))
        await delete(key, revision)

    monkeypatch.setattr(store.volumes, "delete", node_writes_first)
    ack = await api.vm_delete(b'{"name": "vm2"}')
    assert raced == ["own2"] * 3 and "own2" in ack.message
    assert (await api.volumes.list_all(b"{}")).items == []
