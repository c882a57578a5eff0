"""VirtualMachineClones against a real nats-server, with the nodes' real volume work (qemu-img) and
the leader's real controller: the source's volumes are snapshotted, copied under new names on their
node with the bytes they had, the target VM made stopped with an identity of its own, and the
clone's own snapshot removed. Refusals leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proto.api import encode
from proto.clones import PREFIX_TARGET_NAME, SOURCE_SNAPSHOT, CloneCreate, ClonePhase, VMClone
from proto.errors import ApiError, Code
from proto.snapshotapi import VMRestore, VMSnapshotCreate
from proto.spec import RunStrategy
from proto.state import VolumePhase
from scheduler.workloads import Workloads
from servicekit.paths import volume_path
from tests.integration import test_snapshots
from tests.integration.test_snapshots import Cluster, _is, _vm_ready, reads, until, volume_phase, write_pattern

pytestmark = pytest.mark.integration
cluster = test_snapshots.cluster  # the fixture: a real nats-server, two nodes' volume work, the API

VM = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
      "metadata": {"name": "vm1", "labels": {"app": "db", "secret/owner": "ann"}},
      "spec": {"runStrategy": "Always", "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
          "domain": {"resources": {"requests": {"memory": "64Mi"}}, "firmware": {"serial": "vm1-serial"},
                     "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                 "interfaces": [{"name": "default", "masquerade": {},
                                                 "macAddress": "02:00:00:00:00:01"}]}},
          "networks": [{"name": "default", "pod": {}}],
          "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "root"}}]}}}}


async def clone_of(cluster: Cluster, name: str) -> VMClone:
    return (await cluster.api.clones.get(json.dumps({"name": name}).encode())).item


async def ended(cluster: Cluster, name: str) -> bool:
    clone = await clone_of(cluster, name)
    assert clone.phase is not ClonePhase.FAILED, clone.reason
    return clone.phase is ClonePhase.SUCCEEDED


async def test_a_clone_copies_the_volumes_and_makes_a_stopped_vm_of_its_own(cluster: Cluster, tmp_path: Path) -> None:
    api, admin = cluster.api, cluster.admin
    events: list[tuple[str, str, str]] = []

    async def emit(kind: str, name: str, reason: str, message: str) -> None:
        events.append((kind, name, reason))

    controller = Workloads(admin, emit=emit)
    await controller.start()
    try:
        await api.volumes.create(b'{"name": "root", "size": "32Mi", "node": "node1"}')
        await until("root Ready", lambda: _is(volume_phase(admin, "root"), VolumePhase.READY))
        await api.vm_create(json.dumps(VM).encode())
        source_file = volume_path(cluster.dirs["node1"], (await admin.volumes.require("root", "volume")).value)
        write_pattern(source_file, b"\x11" * 512, 0)  # what the guest wrote

        clone = (await api.clones.create(encode(CloneCreate(name="c1", source="vm1", target="vm1-copy",
                                                            label_filters=["*", "!secret/"])))).item
        assert clone.phase is ClonePhase.PENDING
        await until("c1 Succeeded", lambda: ended(cluster, "c1"))
        write_pattern(source_file, b"\x22" * 512, 0)  # the source goes on; its copy is its own

        done = await clone_of(cluster, "c1")
        copy_name = f"restore-{done.uid[:8]}-root"
        assert done.volumes == {"root": copy_name} and done.finished_at is not None
        copy = (await admin.volumes.require(copy_name, "volume")).value
        assert copy.node == "node1" and copy.phase is VolumePhase.READY and copy.owner_vm is None
        assert reads(volume_path(cluster.dirs["node1"], copy), 0, 512, 0x11)
        target = (await admin.vms.require("vm1-copy", "VM")).value.spec
        assert target.run_strategy is RunStrategy.HALTED  # made stopped, as KubeVirt makes it
        assert target.vm_labels == {"app": "db"} and target.labels == {"app": "db"}
        assert [v.source.claim_name for v in target.volumes] == [copy_name]  # type: ignore[union-attr]
        assert target.interfaces[0].mac_address is None and target.firmware is None
        assert (await admin.vms.require("vm1", "VM")).value.spec.run_strategy is RunStrategy.ALWAYS
        # the clone's own snapshot is gone, bytes and all
        assert done.snapshot is not None and await admin.vm_snapshots.get(done.snapshot) is None
        assert not [e.key for e in await admin.snapshots.items() if e.key.startswith("tmp-snapshot-")]
        assert [r for _, n, r in events if n == "c1"] == ["SnapshotCreated", "TargetVMCreated", "CloneSucceeded"]

        # from a VM snapshot the user took: the bytes at that point; the snapshot stays
        await api.snapshots.vm_create(encode(VMSnapshotCreate(vm="vm1", name="s1")))
        await until("s1 Ready", lambda: _vm_ready(api, "s1"))
        await api.clones.create(encode(CloneCreate(name="c2", source="s1", source_kind=SOURCE_SNAPSHOT,
                                                   target="vm1-two", volume_name_policy=PREFIX_TARGET_NAME)))
        await until("c2 Succeeded", lambda: ended(cluster, "c2"))
        two = (await admin.volumes.require("vm1-two-root", "volume")).value
        assert reads(volume_path(cluster.dirs["node1"], two), 0, 512, 0x22)
        assert await admin.vm_snapshots.get("s1") is not None

        # KubeVirt's VirtualMachineRestore to a VM that does not exist makes it, as a clone of the snapshot
        said = (await api.clones.restore(encode(VMRestore(snapshot="s1", vm="vm1-three")))).message
        assert "VM vm1-three is being made from VM snapshot s1" in said
        [made] = [c for c in (await api.clones.list_all(b"{}")).items if c.target == "vm1-three"]
        await until("the restore's clone Succeeded", lambda: ended(cluster, made.name))
        three = (await admin.vms.require("vm1-three", "VM")).value.spec
        claim = three.volumes[0].source.claim_name  # type: ignore[union-attr]
        assert three.run_strategy is RunStrategy.HALTED and claim == f"restore-{made.uid[:8]}-root"
        assert reads(volume_path(cluster.dirs["node1"], (await admin.volumes.require(claim, "v")).value), 0, 512, 0x22)
        for wrong, field in ((VMRestore(snapshot="s1", vm="vm1-two"), "vm"),  # another VM's: never overwritten
                             (VMRestore(snapshot="s1", vm="vm1-four", node="node2"), "node")):
            with pytest.raises(ApiError) as err:
                await api.clones.restore(encode(wrong))
            assert err.value.code is Code.INVALID and err.value.field == field
        assert await admin.vms.get("vm1-four") is None

        # a volume no VM has used yet has nothing to copy: the clone fails saying so, and makes nothing
        await api.volumes.create(b'{"name": "unused", "size": "32Mi"}')
        fresh = json.loads(json.dumps(VM))
        fresh["metadata"]["name"] = "vm0"
        fresh["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "unused"
        fresh["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0].pop("macAddress")
        await api.vm_create(json.dumps(fresh).encode())
        await api.clones.create(encode(CloneCreate(name="c0", source="vm0", target="vm0-copy")))

        async def failed() -> bool:
            return (await clone_of(cluster, "c0")).phase is ClonePhase.FAILED

        await until("c0 Failed", failed)
        assert "volume unused has no content yet" in (await clone_of(cluster, "c0")).reason
        assert await admin.vms.get("vm0-copy") is None and ("c0", "CloneFailed") in [(n, r) for _, n, r in events]

        # deleting a clone leaves what it made
        await api.clones.delete(b'{"name": "c1"}')
        assert await admin.vms.get("vm1-copy") is not None
        assert await admin.volumes.get(copy_name) is not None
    finally:
        await controller.stop()


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"name": "c9", "source": "vm1", "target": "vm1"}, Code.ALREADY_EXISTS, "spec.target.name"),
    ({"name": "c9", "source": "nope"}, Code.NOT_FOUND, "spec.source.name"),
    ({"name": "c9", "source": "vm1", "newMacAddresses": {"eth7": "02:00:00:00:00:07"}}, Code.INVALID,
     "spec.newMacAddresses.eth7"),
    ({"name": "c9", "source": "vm1", "newSMBiosSerial": "$(reboot)"}, Code.INVALID, "spec.newSMBiosSerial"),
    ({"name": "c9", "source": "vm1", "target": "../etc"}, Code.INVALID, "spec.target.name"),
    ({"name": "c9", "source": "vm1", "labelFilters": ["(x"]}, Code.INVALID, "spec.labelFilters[0]"),
    ({"name": "c9", "source": "vm1", "volumeNamePolicy": "Keep"}, Code.INVALID, "spec.volumeNamePolicy"),
    ({"name": "c9", "source": "vm1", "patches": []}, Code.BAD_REQUEST, None),
    ({"name": "c 9", "source": "vm1"}, Code.INVALID, "metadata.name"),
])
async def test_what_cannot_be_cloned_is_refused_and_nothing_is_stored(cluster: Cluster, body: dict[str, object],
                                                                      code: Code, field: str | None) -> None:
    api, admin = cluster.api, cluster.admin
    vm = json.loads(json.dumps(VM))
    vm["spec"]["template"]["spec"]["volumes"] = []
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"] = []
    await api.vm_create(json.dumps(vm).encode())
    with pytest.raises(ApiError) as err:
        await api.clones.create(json.dumps(body).encode())
    assert err.value.code is code and (field is None or err.value.field == field), err.value
    assert (await api.clones.list_all(b"{}")).items == []
    assert sorted(e.key for e in await admin.vms.items()) == ["vm1"]
