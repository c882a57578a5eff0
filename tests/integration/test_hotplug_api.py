"""addvolume and removevolume over plain NATS against the real api service: the volume goes into the
VM's spec and its running instance's (and is put on the instance's node), comes out of both, and what
cannot be is refused with its field, nothing written."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest

from proto import subjects
from proto.spec import Disk, PersistentVolumeClaim, VMSpec, Volume
from proto.state import VM, VMI, PersistentVolume, Phase
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def call(store: Store, kind: str, verb: str, **body: Any) -> dict[str, Any]:
    msg = await store.nc.request(subjects.api(kind, verb), json.dumps(body).encode(), timeout=5)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply


def error(reply: dict[str, Any]) -> tuple[str, str]:
    return reply["error"]["code"], reply["error"].get("field", "")


async def volume(store: Store, name: str, node: str | None = None) -> None:
    await store.volumes.create(name, PersistentVolume(name=name, uid=f"uid-{name}", size="64Mi",
                                                      created_at=time.time(), node=node))


async def running(store: Store, name: str = "vm1", node: str = "node1", *, standalone: bool = False) -> None:
    spec = VMSpec(name=name, memory="64Mi")
    if not standalone:
        await store.vms.create(name, VM(spec=spec, created_at=time.time()))
    await store.vmis.create(name, VMI(name=name, uid=f"u-{name}", spec=spec, created_at=time.time(),
                                      phase=Phase.RUNNING, node_name=node, standalone=standalone))


async def specs(store: Store, name: str = "vm1") -> tuple[VMSpec, VMSpec]:
    vm = (await store.vms.require(name, "VM")).value
    vmi = (await store.vmis.require(name, "VMI")).value
    return vm.spec, vmi.spec


async def test_a_volume_is_added_to_the_vm_and_its_instance_and_removed_from_both(api: Store) -> None:
    store = api
    await running(store)
    await volume(store, "data")  # on no node yet: its first consumer's
    reply = await call(store, "vm", "addvolume", name="vm1", volumeName="data", serial="D1")
    assert reply["message"] == "Successfully submitted add volume request to VM vm1 for volume data"
    vm_spec, vmi_spec = await specs(store)
    wanted_disk = Disk(name="data", bus="scsi", serial="D1")
    wanted_volume = Volume(name="data", source=PersistentVolumeClaim(claim_name="data", hotpluggable=True))
    for spec in (vm_spec, vmi_spec):
        assert spec.disks == [wanted_disk] and spec.volumes == [wanted_volume]
    assert (await store.vms.require("vm1", "VM")).value.generation == 2
    assert (await store.volumes.require("data", "volume")).value.node == "node1"  # where the instance runs
    # the API's view of the instance says it as KubeVirt does
    shown = await call(store, "vmi", "get", name="vm1")
    assert shown["item"]["spec"]["volumes"][0]["source"] == {"type": "persistentVolumeClaim", "claimName": "data",
                                                             "hotpluggable": True}
    again = await call(store, "vm", "addvolume", name="vm1", volumeName="data")
    assert error(again) == ("AlreadyExists", "volumeName")

    reply = await call(store, "vm", "removevolume", name="vm1", volumeName="data")
    assert reply["message"] == "Successfully submitted remove volume request to VM vm1 for volume data"
    vm_spec, vmi_spec = await specs(store)
    assert vm_spec.disks == vmi_spec.disks == [] and vm_spec.volumes == vmi_spec.volumes == []
    assert error(await call(store, "vm", "removevolume", name="vm1", volumeName="data")) == ("NotFound", "volumeName")


async def test_a_stopped_vm_keeps_it_for_its_next_start_and_a_standalone_instance_takes_it(api: Store) -> None:
    store = api
    await store.vms.create("off", VM(spec=VMSpec(name="off", memory="64Mi"), created_at=time.time()))
    await volume(store, "cold", node="node2")
    await call(store, "vm", "addvolume", name="off", volumeName="cold", diskName="extra")
    spec = (await store.vms.require("off", "VM")).value.spec
    assert [v.name for v in spec.volumes] == ["extra"] and spec.disks[0].serial == "extra"
    assert (await store.volumes.require("cold", "volume")).value.node == "node2"  # not moved
    await running(store, "alone", standalone=True)
    await volume(store, "solo")
    reply = await call(store, "vmi", "addvolume", name="alone", volumeName="solo")
    assert reply["message"].endswith("to VMI alone for volume solo")
    vmi = (await store.vmis.require("alone", "VMI")).value
    assert [v.name for v in vmi.spec.volumes] == ["solo"]
    # the CLI's fallback: no VM of that name
    assert error(await call(store, "vm", "addvolume", name="alone", volumeName="solo")) == ("NotFound", "")


async def test_what_cannot_be_hotplugged_is_refused_and_nothing_is_written(api: Store) -> None:
    store = api
    await running(store)
    await running(store, "vm2")
    await volume(store, "elsewhere", node="node2")
    await volume(store, "shared")
    await call(store, "vm", "addvolume", name="vm2", volumeName="shared")
    before = await specs(store)
    refusals = [
        ({"volumeName": "nosuch"}, ("NotFound", "")),
        ({"volumeName": "elsewhere"}, ("Invalid", "volumeName")),  # a file of node2; vm1 runs on node1
        ({"volumeName": "shared"}, ("Conflict", "volumeName")),  # vm2's
        ({"volumeName": "Bad_Name"}, ("Invalid", "volumeName")),
        ({"volumeName": "elsewhere", "diskName": "../x"}, ("Invalid", "diskName")),
        ({"volumeName": "elsewhere", "bus": "virtio"}, ("Invalid", "bus")),
        ({"volumeName": "elsewhere", "diskType": "lun"}, ("Invalid", "diskType")),
        ({"volumeName": "elsewhere", "serial": "a b"}, ("Invalid", "serial")),
        ({"volumeName": "elsewhere", "cache": "unsafe"}, ("BadRequest", "cache")),
    ]
    for body, wanted in refusals:
        reply = await call(store, "vm", "addvolume", name="vm1", **body)
        assert error(reply) == wanted, (body, reply)
    assert error(await call(store, "vm", "addvolume", name="vm1", volumeName="shared", surprise=1))[0] == "BadRequest"
    bad = await store.nc.request(subjects.api("vm", "addvolume"), b'{"name": "vm1", "volumeName": ', timeout=5)
    assert json.loads(bad.data)["error"]["code"] == "BadRequest"
    dry = await call(store, "vm", "addvolume", name="vm1", volumeName="spare", dryRun=True)
    assert error(dry) == ("NotFound", "")
    await volume(store, "spare")
    dry = await call(store, "vm", "addvolume", name="vm1", volumeName="spare", dryRun=True)
    assert "dry run" in dry["message"]
    assert await specs(store) == before
    assert (await store.volumes.require("spare", "volume")).value.node is None
    # a volume of the spec that is not hotpluggable stays until the VM is changed and restarted
    plain = VMSpec(name="vm3", memory="64Mi", disks=[Disk(name="root")],
                   volumes=[Volume(name="root", source=PersistentVolumeClaim(claim_name="spare"))])
    await store.vms.create("vm3", VM(spec=plain, created_at=time.time()))
    assert error(await call(store, "vm", "removevolume", name="vm3", volumeName="root")) == ("Invalid", "volumeName")
    for kind in ("vm", "vmi"):
        assert error(await call(store, kind, "removevolume", name="../vm3", volumeName="root")) == ("Invalid", "name")
        assert error(await call(store, kind, "addvolume", name="../vm3", volumeName="root")) == ("Invalid", "name")
    # a VM with hotplug disabled takes none
    await store.vms.create("vm4", VM(spec=VMSpec(name="vm4", disable_hotplug=True), created_at=time.time()))
    await volume(store, "other")
    assert error(await call(store, "vm", "addvolume", name="vm4", volumeName="other")) == ("Invalid", "name")
    # an instance whose node is silent, or one that is migrating, is not changed under it
    await store.vmis.mutate("vm1", lambda v: msgspec.structs.replace(v, phase=Phase.UNKNOWN))
    assert error(await call(store, "vm", "addvolume", name="vm1", volumeName="other")) == ("Unavailable", "")
    assert (await store.vms.require("vm1", "VM")).value.spec.volumes == []
