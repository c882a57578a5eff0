"""A scrape of the node's /metrics shows each Running VMI's counters as they are at the scrape, though
its launcher samples libvirt only when asked (and once a minute unasked, not as it starts): real
nats-server, the handler's NodeMetrics and the launcher's StatsPublisher, with a stand-in for libvirt's
record."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import generate_latest

from handler.metrics import NodeMetrics
from launcher.statspublisher import StatsPublisher
from proto.spec import VMSpec
from proto.state import VMI, Phase
from servicekit.store import Store

pytestmark = pytest.mark.integration


class Domain:
    """libvirt's statistics record of a running guest, whose vCPU time goes on; counts the samples."""

    def __init__(self) -> None:
        self.vcpu_ns = 1_000_000_000
        self.samples = 0

    async def record(self) -> dict[str, object]:
        self.samples += 1
        return {"vcpu.current": 1, "vcpu.0.time": self.vcpu_ns, "net.count": 1, "net.0.name": "tap0",
                "net.0.tx.bytes": 7}


def vcpu_seconds(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("kubevirt_vmi_vcpu_seconds_total{") and 'name="testvm"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_scrape_gets_fresh_samples_and_an_idle_launcher_samples_nothing(store: Store) -> None:
    metrics = NodeMetrics(store, "node1")
    metrics.collector.vmis["testvm"] = VMI(name="testvm", uid="u1", spec=VMSpec(name="testvm", memory="64Mi"),
                                           created_at=0.0, phase=Phase.RUNNING, node_name="node1")
    domain = Domain()
    publisher = StatsPublisher(store.nc, node="node1", vmi="testvm", uid="u1", record=domain.record,
                               nic_names=lambda: {"tap0": "default"}, every=3600)
    tasks = [asyncio.create_task(metrics.run()), asyncio.create_task(publisher.run())]
    try:
        await asyncio.sleep(1.0)
        assert domain.samples == 0  # nobody asked: nothing sampled, not even as the domain started
        text = (await asyncio.to_thread(generate_latest, metrics.registry)).decode()  # as Prometheus scrapes
        assert vcpu_seconds(text) == 1.0 and domain.samples == 1
        assert 'kubevirt_vmi_network_transmit_bytes_total{interface="default"' in text
        domain.vcpu_ns = 5_000_000_000
        await asyncio.sleep(1.0)
        assert domain.samples == 1  # nobody asked since: nothing sampled
        text = (await asyncio.to_thread(generate_latest, metrics.registry)).decode()
        assert vcpu_seconds(text) == 5.0  # the counter as it is now, not as last sampled
        assert domain.samples == 2
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
