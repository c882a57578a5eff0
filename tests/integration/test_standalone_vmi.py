"""A VirtualMachineInstance of its own against a real nats-server and the real scheduler: applied as
KubeVirt writes it, bound, left alone when it ends (no VM runs it again), refused as a VM's name,
and gone after ``vmi delete`` once its node has torn it down; a VM's own instance is not deletable so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import pytest
import yaml

from proto.errors import ApiError, Code
from proto.state import Node, Phase
from scheduler.api import Api
from scheduler.controllers import Scheduler
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
VMI_MANIFEST = (REPO / "examples" / "testvmi.yaml").read_text()


def as_json(text: str) -> bytes:
    return msgspec.json.encode(yaml.safe_load(text))


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_vmi_of_its_own_runs_once_and_goes_when_deleted(store: Store) -> None:
    await store.nodes.put("node1", Node(name="node1", cpus=4, memory=2**33, kvm=False, heartbeat=time.time(),
                                        started_at=0.0))
    api = Api(store)
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        made = (await api.vmi_apply(as_json(VMI_MANIFEST))).item
        assert made.standalone and made.name == "testvmi"
        assert (await api.vmi_apply(as_json(VMI_MANIFEST))).item.uid == made.uid  # applied again: unchanged

        async def bound() -> bool:
            entry = await store.vmis.get("testvmi")
            return entry is not None and entry.value.node_name == "node1"
        await until(bound, "bound")
        vmi_doc = yaml.safe_load(VMI_MANIFEST)
        as_vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "testvmi"},
                 "spec": {"running": False, "template": {"spec": vmi_doc["spec"]}}}
        with pytest.raises(ApiError) as clash:  # a VM would take it for its own instance
            await api.vm_create(msgspec.json.encode(as_vm))
        assert clash.value.code is Code.ALREADY_EXISTS and "delete vmi" in clash.value.message
        changed = VMI_MANIFEST.replace("memory: 64M", "memory: 128M")
        with pytest.raises(ApiError) as immutable:
            await api.vmi_apply(as_json(changed))
        assert immutable.value.code is Code.ALREADY_EXISTS

        # it ran and ended (the node says so, and that it cleaned up): nobody runs it again
        entry = await store.vmis.require("testvmi", "VMI")
        await store.vmis.update("testvmi", msgspec.structs.replace(entry.value, phase=Phase.SUCCEEDED,
                                                                    torn_down=True), entry.revision)
        await asyncio.sleep(1.0)
        still = await store.vmis.require("testvmi", "VMI")
        assert (still.value.uid, still.value.phase) == (made.uid, Phase.SUCCEEDED)

        await api.vmi_delete(b'{"name": "testvmi"}')

        async def gone() -> bool:
            return await store.vmis.get("testvmi") is None
        await until(gone, "deleted")
    finally:
        await scheduler.stop()


async def test_a_vms_own_instance_is_the_vms(store: Store) -> None:
    api = Api(store)
    manifest = (REPO / "examples" / "testvm-masquerade.yaml").read_text().replace("running: false", "running: true")
    await api.vm_create(as_json(manifest))
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        async def created() -> bool:
            return await store.vmis.get("testvm") is not None
        await until(created, "the VM's instance")
        with pytest.raises(ApiError) as err:
            await api.vmi_delete(b'{"name": "testvm"}')
        assert err.value.code is Code.INVALID and "virtbus stop" in err.value.message
    finally:
        await scheduler.stop()


async def test_a_vmi_naming_a_volume_that_does_not_exist_is_blamed_at_its_own_field(store: Store) -> None:
    """KubeVirt's examples/vmi-pvc.yaml's shape: the refusal names the VMI's field (spec.volumes[0]...),
    not the VM's it is read as, and nothing is stored."""
    doc = yaml.safe_load(VMI_MANIFEST)
    doc["spec"]["volumes"][0] = {"name": "containerdisk", "persistentVolumeClaim": {"claimName": "disk-alpine"}}
    with pytest.raises(ApiError) as err:
        await Api(store).vmi_apply(msgspec.json.encode(doc))
    assert err.value.code is Code.INVALID and err.value.field == "spec.volumes[0].persistentVolumeClaim", err.value
    assert "virtbus volume create disk-alpine" in err.value.message
    assert await store.vmis.get("testvmi") is None


async def test_a_vmi_that_starts_paused_is_made_asking_for_its_pause(store: Store) -> None:
    """startStrategy: Paused is a pause asked from the instance's creation: its launcher starts the
    domain paused, and an unpause (a new pause generation) resumes it."""
    doc = yaml.safe_load(VMI_MANIFEST)
    doc["spec"]["startStrategy"] = "Paused"
    made = (await Api(store).vmi_apply(msgspec.json.encode(doc))).item
    assert made.spec.start_paused and made.pause_requested and made.pause_generation == 1
    plain = yaml.safe_load(VMI_MANIFEST)
    plain["metadata"]["name"] = "plain"
    other = (await Api(store).vmi_apply(msgspec.json.encode(plain))).item
    assert not other.pause_requested and other.pause_generation == 0
    doc["spec"]["startStrategy"] = "Later"
    doc["metadata"]["name"] = "later"
    with pytest.raises(ApiError) as err:
        await Api(store).vmi_apply(msgspec.json.encode(doc))
    assert err.value.code is Code.INVALID and err.value.field == "spec.startStrategy"
