"""Replica sets and pools against a real nats-server with the real scheduler controllers and nodes
simulated in their records: the replica set keeps its count when an instance fails, when its node is
lost, and when scaled up or down; deleting it deletes its instances. A pool names its VMs
<pool>-<index>, gives each its own volumes, makes a deleted one again under its index, and scales
down from the highest index."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import yaml

from ctl import lifecyclecmd
from ctl.client import ApiClient
from proto import subjects
from proto.api import NameRequest
from proto.state import VMI, Node, Phase
from proto.workloads import ScaleRequest
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.nodelife import Thresholds
from scheduler.nodewatch import NodeWatch
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
RS = (REPO / "examples" / "testvmirs.yaml").read_text()
POOL = (REPO / "examples" / "testvmpool.yaml").read_text()


def body(text: str) -> bytes:
    return msgspec.json.encode(yaml.safe_load(text))


def name(value: str) -> bytes:
    return msgspec.json.encode(NameRequest(name=value))


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


@dataclass
class Lab:
    store: Store
    api: Api
    scheduler: Scheduler
    clock: list[float]
    silent: set[str]  # nodes whose handler has stopped: no heartbeat, no report


async def simulate_nodes(lab: Lab) -> None:
    """What the handlers would do: heartbeat, run what is bound to them, stop and tear down what is asked."""
    beat = 0.0
    while True:
        beat += 1.0
        for node in await lab.store.nodes.items():
            if node.key not in lab.silent:
                await lab.store.nodes.put(node.key, msgspec.structs.replace(node.value, heartbeat=beat))
        for entry in await lab.store.vmis.items():
            vmi = entry.value
            if vmi.node_name is None or vmi.node_name in lab.silent:
                continue
            new = vmi
            if vmi.stop_requested and vmi.phase not in (Phase.SUCCEEDED, Phase.FAILED):
                new = msgspec.structs.replace(vmi, phase=Phase.SUCCEEDED, torn_down=True)
            elif vmi.phase is Phase.SCHEDULED:
                new = msgspec.structs.replace(vmi, phase=Phase.RUNNING, started_at=time.time())
            if new is not vmi:
                with contextlib.suppress(Exception):
                    await lab.store.vmis.update(entry.key, new, entry.revision)
        await asyncio.sleep(0.2)


@pytest.fixture
async def lab(store: Store) -> AsyncIterator[Lab]:
    clock = [1000.0]
    nodes = NodeWatch(store, thresholds=Thresholds(ready_within=15.0, lost_after=40.0), clock=lambda: clock[0])
    for node in ("node1", "node2"):
        await store.nodes.put(node, Node(name=node, cpus=8, memory=2**33, kvm=False, heartbeat=0.0, started_at=0.0))
    scheduler = Scheduler(store, nodes=nodes)
    lab = Lab(store, Api(store, readiness=nodes.readiness), scheduler, clock, set())
    tasks = [asyncio.create_task(nodes.run()), asyncio.create_task(simulate_nodes(lab))]
    await scheduler.start()
    try:
        yield lab
    finally:
        await scheduler.stop()
        await cancel_and_wait(tasks)  # (a plain cancel can be lost to a reply arriving with it)


async def members(store: Store, owner: str) -> list[VMI]:
    return sorted((e.value for e in await store.vmis.items() if e.value.owner == owner), key=lambda v: v.name)


async def running(lab: Lab, owner: str, count: int) -> list[VMI]:
    """Wait until the set has exactly ``count`` instances Running and nothing else of it is left."""
    async def settled() -> bool:
        mine = await members(lab.store, owner)
        return len(mine) == count and all(v.phase is Phase.RUNNING and not v.deleting for v in mine)
    await until(settled, f"{count} instances of {owner} running, nothing else left")
    return await members(lab.store, owner)


async def test_a_replica_set_keeps_its_count(lab: Lab) -> None:
    made = (await lab.api.replicasets.apply(body(RS))).item
    assert (made.replica_set.name, made.replica_set.replicas) == ("testreplicaset", 2)
    first = await running(lab, "testreplicaset", 2)
    assert all(v.name.startswith("testreplicaset-") and len(v.name) == len("testreplicaset-") + 5 for v in first)
    assert all(v.standalone and v.spec.labels == {"myvmi": "myvmi"} for v in first)
    status = (await lab.api.replicasets.get(name("testreplicaset"))).item.status
    assert (status.replicas, status.ready_replicas) == (2, 2)
    listed = (await lab.api.vmi_list(b"{}")).items  # get vmis shows them
    assert {v.name for v in listed} == {v.name for v in first}

    # one fails: replaced under a new name, and the failed one goes
    failed = first[0]
    entry = await lab.store.vmis.require(failed.name, "VMI")
    await lab.store.vmis.update(failed.name, msgspec.structs.replace(entry.value, phase=Phase.FAILED, torn_down=True),
                                entry.revision)
    after_failure = await running(lab, "testreplicaset", 2)
    assert failed.name not in {v.name for v in after_failure}
    assert first[1].name in {v.name for v in after_failure}

    # its node is lost: the instance there is Unknown, no longer counted, and replaced on the other node
    victim = after_failure[0]
    assert victim.node_name is not None
    lost_node = victim.node_name
    lab.silent.add(lost_node)
    for _ in range(9):  # 45 s on the scheduler's clock, past the node lifecycle's grace; the other node beats
        lab.clock[0] += 5.0
        await asyncio.sleep(0.4)

    async def replaced() -> bool:
        mine = await members(lab.store, "testreplicaset")
        live = [v for v in mine if v.phase is Phase.RUNNING and not v.deleting]
        gone = next((v for v in mine if v.name == victim.name), None)
        return (len(live) == 2 and all(v.node_name != lost_node for v in live)
                and gone is not None and gone.phase is Phase.UNKNOWN and gone.deleting)
    await until(replaced, "the lost node's instance replaced elsewhere")
    status = (await lab.api.replicasets.get(name("testreplicaset"))).item.status
    assert (status.replicas, status.ready_replicas) == (2, 2)

    lab.silent.clear()  # the node comes back: its instance is stopped and removed
    await running(lab, "testreplicaset", 2)

    await lab.api.replicasets.scale(msgspec.json.encode(ScaleRequest(name="testreplicaset", replicas=3)))
    three = await running(lab, "testreplicaset", 3)
    await lab.api.replicasets.scale(msgspec.json.encode(ScaleRequest(name="testreplicaset", replicas=1)))
    one = await running(lab, "testreplicaset", 1)
    oldest = min(three, key=lambda v: v.created_at)
    assert one[0].name == oldest.name  # the newest go first

    await lab.api.replicasets.delete(name("testreplicaset"))

    async def all_gone() -> bool:
        return not await members(lab.store, "testreplicaset")
    await until(all_gone, "deleting the set deletes its instances")


async def test_a_pool_names_its_vms_and_gives_each_its_volumes(lab: Lab) -> None:
    await lab.api.pools.apply(body(POOL))

    async def vms(expected: set[str]) -> bool:
        return {e.key for e in await lab.store.vms.items()} == expected
    await until(lambda: vms({"vm-pool-cirros-0", "vm-pool-cirros-1"}), "two VMs named by index")
    for index in (0, 1):
        vm = (await lab.store.vms.require(f"vm-pool-cirros-{index}", "VM")).value
        assert vm.owner == "vm-pool-cirros"
        volume = (await lab.store.volumes.require(f"rootdisk-vm-pool-cirros-{index}", "volume")).value
        assert volume.owner_vm == f"vm-pool-cirros-{index}" and volume.size == "1Gi"

    async def ready(count: int) -> bool:
        return (await lab.api.pools.get(name("vm-pool-cirros"))).item.status.ready_replicas == count
    await until(lambda: ready(2), "both VMs running")

    before = (await lab.store.vms.require("vm-pool-cirros-1", "VM")).value.created_at
    await lab.api.vm_delete(name("vm-pool-cirros-1"))  # by hand: the pool makes it again, index and all

    async def again() -> bool:
        entry = await lab.store.vms.get("vm-pool-cirros-1")
        return entry is not None and entry.value.created_at != before and entry.value.owner == "vm-pool-cirros"
    await until(again, "made again under its index")

    await lab.api.pools.scale(msgspec.json.encode(ScaleRequest(name="vm-pool-cirros", replicas=3)))
    await until(lambda: vms({"vm-pool-cirros-0", "vm-pool-cirros-1", "vm-pool-cirros-2"}), "scaled up")
    await lab.api.pools.scale(msgspec.json.encode(ScaleRequest(name="vm-pool-cirros", replicas=1)))
    await until(lambda: vms({"vm-pool-cirros-0"}), "scaled down from the highest index")
    volumes = {e.key for e in await lab.store.volumes.items()}
    assert volumes == {"rootdisk-vm-pool-cirros-0"}  # the others' volumes went with them

    await lab.api.pools.delete(name("vm-pool-cirros"))
    assert await vms(set())

    # The pool's controller deletes its VMs too, as the delete does: when it took a VM first, the
    # delete answers while the controller still deletes that VM's volumes (KubeVirt's garbage
    # collection of owned objects is not synchronous either)
    async def no_volumes() -> bool:
        return not await lab.store.volumes.items()
    await until(no_volumes, "the last VM's volume gone with it")


async def test_over_the_bus_bad_input_gets_a_typed_error_and_changes_nothing(api: Store) -> None:
    async def ask(kind: str, verb: str, payload: bytes) -> dict[str, Any]:
        reply = await api.nc.request(subjects.api(kind, verb), payload, timeout=10)
        decoded = msgspec.json.decode(reply.data)
        assert isinstance(decoded, dict)
        return decoded

    bad = yaml.safe_load(RS)
    bad["spec"]["template"]["spec"]["domain"]["devices"]["gpus"] = []
    error = (await ask("vmirs", "apply", msgspec.json.encode(bad)))["error"]
    assert isinstance(error, dict) and error["field"] == "spec.template.spec.domain.devices.gpus"
    error = (await ask("vmirs", "scale", b'{"name": "testreplicaset", "replicas": 2}'))["error"]
    assert isinstance(error, dict) and error["code"] == "NotFound"
    assert (await ask("vmirs", "list", b"{}")) == {"items": []}

    made = await ask("vmirs", "apply", body(RS))
    assert "item" in made
    error = (await ask("vmirs", "scale", b'{"name": "testreplicaset", "replicas": -1}'))["error"]
    assert isinstance(error, dict) and error["field"] == "replicas"
    error = (await ask("vmpool", "apply", b'{"apiVersion": "pool.kubevirt.io/v1alpha1"}'))["error"]
    assert isinstance(error, dict) and error["field"] == "kind"
    listed = await ask("vmirs", "list", b"{}")
    assert [i["replicaSet"]["replicas"] for i in listed["items"]] == [2]
    assert (await ask("vmpool", "list", b"{}")) == {"items": []}
    prefs = await ask("preference", "list", b"{}")
    assert {p["name"] for p in prefs["items"]} >= {"cirros", "legacy"}


@pytest.mark.parametrize(("kind", "manifest", "owner"), [("vmpool", POOL, "vm-pool-cirros"),
                                                          ("vmirs", RS, "testreplicaset")])
@pytest.mark.usefixtures("api")  # the api service, as the CLI reaches it over the bus
async def test_delete_wait_returns_once_what_it_made_is_gone(lab: Lab, nats_url: str, kind: str, manifest: str,
                                                            owner: str) -> None:
    # `virtbus delete vmpool|vmirs NAME --wait` took the flag and answered at once, its VMs and
    # their instances still stopping; as `kubectl delete` it now waits for what the owner took along
    if kind == "vmpool":
        await lab.api.pools.apply(body(manifest))
    else:
        await lab.api.replicasets.apply(body(manifest))

    async def all_running() -> bool:
        vmis = [e.value for e in await lab.store.vmis.items()]
        return len(vmis) == 2 and all(v.phase is Phase.RUNNING for v in vmis)
    await until(all_running, "both instances running")
    client = await ApiClient.connect(nats_url)
    try:
        args = argparse.Namespace(command="delete", kind=kind, name=owner, wait=True, timeout=30.0)
        assert await lifecyclecmd.cmd_lifecycle(client, args) == 0
    finally:
        await client.close()
    assert not await lab.store.vms.items() and not await lab.store.vmis.items()
