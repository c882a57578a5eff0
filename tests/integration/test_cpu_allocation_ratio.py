"""KubeVirt's cpuAllocationRatio against a real nats-server, the real API service and the real
Scheduler: the default stays 10 (a 2-CPU node binds 20 one-vCPU VMIs, the 21st is Unschedulable for
cpu); the KubeVirt CR applied as a user would (``virtbus apply -f``) raises it and the waiting VMIs
bind; lowering it evicts nothing; a bad CR is refused and changes nothing; another scheduler process
sees the stored ratio too."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctl import getcmd, manifestcmd
from ctl.client import ApiClient
from proto import subjects
from proto.api import NodeList, VMIReply
from proto.clusterconfig import RATIO_PATH, ClusterConfig, ClusterConfigReply
from proto.errors import Code
from proto.state import VMI, Node
from scheduler.clusterconfig import ClusterConfigWatch
from scheduler.controllers import Scheduler
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
CR = yaml.safe_load((REPO / "examples" / "kubevirt-cr.yaml").read_text())
VMI_DOC = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())


def cr(ratio: object) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(CR)
    doc["spec"]["configuration"]["developerConfiguration"]["cpuAllocationRatio"] = ratio
    return doc


async def heartbeats(store: Store) -> None:
    """The handler's part: node1, 2 CPUs and memory for hundreds of seed VMs, stays Ready."""
    while True:
        await store.nodes.put("node1", Node(name="node1", cpus=2, memory=1 << 40, kvm=False, heartbeat=time.time(),
                                            started_at=0.0))
        await asyncio.sleep(1.0)


@pytest.fixture
async def cluster(api: Store, nats_url: str) -> AsyncIterator[ApiClient]:
    beating = asyncio.create_task(heartbeats(api))
    scheduler = Scheduler(api)
    client = await ApiClient.connect(nats_url)
    try:
        await asyncio.sleep(0.2)
        await scheduler.start()
        yield client
    finally:
        await cancel_and_wait([beating])  # a plain cancel can be lost to a reply
        await scheduler.stop()
        await client.close()


async def create(client: ApiClient, names: list[str]) -> None:
    for name in names:
        doc = {**VMI_DOC, "metadata": {"name": name}}
        await client.call("vmi", "apply", json.dumps(doc).encode(), VMIReply)


async def settled(store: Store, names: list[str], bound: int) -> list[VMI]:
    """Every one decided (bound or Unschedulable), ``bound`` of them bound."""
    deadline = time.monotonic() + 30
    while True:
        vmis = [e.value for e in await store.vmis.items() if e.key in names]
        done = [v for v in vmis if v.node_name or any(c.reason == "Unschedulable" for c in v.conditions)]
        if len(done) == len(names) and sum(v.node_name is not None for v in vmis) == bound:
            return vmis
        assert time.monotonic() < deadline, f"{sum(v.node_name is not None for v in vmis)} of {len(names)} bound"
        await asyncio.sleep(0.2)


async def apply_file(client: ApiClient, tmp: Path, doc: object) -> int:
    path = tmp / "kubevirt.yaml"
    path.write_text(yaml.safe_dump(doc))
    return await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(path)))


async def test_the_ratio_decides_how_many_bind_and_changes_evict_nothing(
        api: Store, cluster: ApiClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = cluster
    assert (await client.call("kubevirt", "get", {}, ClusterConfigReply)).item.cpu_allocation_ratio == 10
    first = [f"r{i:02d}" for i in range(22)]
    await create(client, first)
    vmis = await settled(api, first, bound=20)  # the default: 2 CPUs x 10
    for v in (v for v in vmis if v.node_name is None):
        cond = next(c for c in v.conditions if c.type == "PodScheduled")
        assert cond.message == "0/1 nodes are available: 1 Insufficient cpu."
    [view] = (await client.call("node", "list", {}, NodeList)).items
    assert (view.allocated_cpus, view.vcpu_capacity) == (20, 20)

    await apply_file(client, tmp_path, cr(15))  # `virtbus apply -f`, as a KubeVirt user applies the CR
    await settled(api, first, bound=22)  # the two waiting bind on the next decisions
    more = [f"s{i:02d}" for i in range(10)]
    await create(client, more)
    await settled(api, more, bound=8)  # 30 in all
    [view] = (await client.call("node", "list", {}, NodeList)).items
    assert (view.allocated_cpus, view.vcpu_capacity) == (30, 30)

    # a bad CR is refused with the field, and changes nothing
    capsys.readouterr()
    for bad in (0, -3, 2.5, "40", 100000):  # said as `virtbus apply` says it, exit 1
        assert await apply_file(client, tmp_path, cr(bad)) == 1
        said = capsys.readouterr().err
        assert said.startswith((f"error: {Code.INVALID.value} ({RATIO_PATH})",
                                f"error: {Code.BAD_REQUEST.value} ({RATIO_PATH})")), said
    assert await apply_file(client, tmp_path, {**cr(40), "spec": {**cr(40)["spec"], "infra": {"replicas": 2}}}) == 1
    assert "(spec.infra)" in capsys.readouterr().err
    assert (await client.call("kubevirt", "get", {}, ClusterConfigReply)).item.cpu_allocation_ratio == 15

    # lowered below what runs: nothing is evicted, nothing new binds
    await apply_file(client, tmp_path, cr(5))
    last = ["t00"]
    await create(client, last)
    await settled(api, last, bound=0)
    await asyncio.sleep(1.0)
    assert sum(e.value.node_name == "node1" for e in await api.vmis.items()) == 30
    [view] = (await client.call("node", "list", {}, NodeList)).items
    assert (view.allocated_cpus, view.vcpu_capacity) == (30, 10)


async def test_every_scheduler_process_watches_the_stored_ratio(api: Store, nats_url: str) -> None:
    other = await Store.connect(nats_url, "other-scheduler")
    watch = ClusterConfigWatch(other)
    watching = asyncio.create_task(watch.run())
    client = await ApiClient.connect(nats_url)
    try:
        await asyncio.wait_for(watch.primed.wait(), 10)
        assert watch.cpu_ratio == 10  # nothing stored: KubeVirt's default
        await client.call("kubevirt", "apply", json.dumps(cr(75)).encode(), ClusterConfigReply)
        await until(lambda: watch.cpu_ratio == 75)
        # written by hand with a value the API refuses: set aside, read as the default everywhere
        kv = await api.js.key_value(subjects.BUCKET_CONFIG)
        await kv.put(subjects.CONFIG_KUBEVIRT, b'{"cpuAllocationRatio": 0}')
        await until(lambda: watch.cpu_ratio == 10)
        assert (await client.call("kubevirt", "get", {}, ClusterConfigReply)).item == ClusterConfig()
    finally:
        await cancel_and_wait([watching])  # a plain cancel can be lost to a reply
        await client.close()
        await other.close()


async def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10.0
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.05)


async def test_get_kubevirt_shows_what_was_applied_and_its_yaml_applies_back(
        cluster: ApiClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def get(kind: str, output: str | None) -> argparse.Namespace:
        return argparse.Namespace(kind=kind, name=None, output=output, watch=False, selector="")

    def said() -> list[str]:  # what the CLI printed, without the in-process services' log lines
        return [line for line in capsys.readouterr().out.splitlines() if not re.match(r"^\d{4}-\d\d-\d\d ", line)]

    await apply_file(cluster, tmp_path, cr(40))
    assert said() == ["kubevirt/kubevirt applied (cpuAllocationRatio 40)"]
    await getcmd.run(cluster, get("kubevirt", None))
    header, row = said()
    assert header.split() == ["NAME", "AGE", "PHASE", "CPU-ALLOCATION-RATIO"]
    assert row.split()[0] == "kubevirt" and row.split()[2:] == ["Deployed", "40"]
    await getcmd.run(cluster, get("kv", "yaml"))
    printed = yaml.safe_load("\n".join(said()))
    assert printed["spec"] == {"configuration": {"developerConfiguration": {"cpuAllocationRatio": 40}}}
    await apply_file(cluster, tmp_path, printed)
    assert said() == ["kubevirt/kubevirt applied (cpuAllocationRatio 40)"]
    await getcmd.run(cluster, get("nodes", "wide"))
    header, row = said()
    assert "VCPUS" in header.split() and "0/80" in row.split()  # none booked of 2 CPUs x 40
