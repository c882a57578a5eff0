"""A node that ends many launchers at once, each waiting out its guest's grace period, keeps renewing
its lease: before, each end held one of the loop's worker threads (six on this 2-core box) for up to a
minute, the renewal queued behind them, and a node three renewals late is judged lost and its HA VMs
failed over (scheduler.nodelife). Through the real agent and store; each launcher stands in as a real
process that ignores SIGTERM, as a launcher does while its guest shuts down."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from handler.agent import Agent
from handler.launchers import Launcher, Launchers, NodePaths
from handler.podnet import PodNetwork
from proto.spec import VMSpec
from proto.state import NODE_LEASE_RENEW_S, VMI, Node, Phase
from scheduler.nodeapi import NodeApi
from servicekit.endpoints import serve
from servicekit.fake_netlink import FakeNetlink
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

pytestmark = pytest.mark.integration
ENDING = 40  # more than any default thread pool of the loop has threads (at most 32)
STUBBORN = ["sh", "-c", "trap '' TERM; exec sleep 120"]  # SIGTERM ignored (through the exec), SIGKILL not


def start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command)


class StubbornLaunchers(Launchers):
    def __init__(self, paths: NodePaths) -> None:
        super().__init__(paths, node="node1", nats_url="nats://x", netns_prefix="vbtest", kvm=False)
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, vmi: str, uid: str, pod_ip: str | None = None, pod_gateway: str | None = None,
              secondary: list[str] | None = None, migration: str | None = None) -> Launcher:
        proc = start(STUBBORN)
        self.procs.append(proc)
        self.running[vmi] = Launcher(vmi, uid, proc.pid, proc)
        return self.running[vmi]

    def end_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
async def node(store: Store, tmp_path: Path) -> AsyncIterator[tuple[Agent, StubbornLaunchers]]:
    record = Node(name="node1", cpus=64, memory=2**36, kvm=False, heartbeat=time.time(), started_at=time.time())
    await store.nodes.create("node1", record)
    launchers = StubbornLaunchers(NodePaths(tmp_path / "node1", tmp_path / "logs"))
    service = await serve(store.nc, name="virtbus-nodeapi", version="0.1.0", description="test", queue="q",
                          endpoints=NodeApi(store).endpoints())
    podnet = PodNetwork(store, "node1", None, IPv4Network("10.244.0.0/24"), FakeNetlink())  # never the host's
    agent = Agent(store, record, launchers, podnet, NodeApiClient(store.nc, "node1"), parallel_launches=ENDING)
    try:
        yield agent, launchers
    finally:
        launchers.end_all()  # first: the agent's stop waits for its reconciles
        await agent.stop()
        await service.stop()


async def test_the_lease_is_renewed_while_many_launchers_take_their_grace(
        store: Store, node: tuple[Agent, StubbornLaunchers]) -> None:
    agent, launchers = node
    names = [f"vm{i}" for i in range(ENDING)]
    for name in names:
        await store.vmis.create(name, VMI(name=name, uid=f"uid-{name}", spec=VMSpec(name=name),
                                          created_at=time.time(), node_name="node1", phase=Phase.SCHEDULED))
        await agent.reconcile(name)
    assert sorted(launchers.running) == sorted(names)
    for name in names:  # all deleted at once: each launcher is asked to end, and takes its grace
        await store.vmis.delete(name)
    ending = [asyncio.create_task(agent.reconcile(name)) for name in names]
    await asyncio.sleep(1.0)
    assert all(p.poll() is None for p in launchers.procs), "the launchers are still in their grace period"

    before = await store.node_leases.get("node1")
    # the renewal the heartbeat loop makes every NODE_LEASE_RENEW_S; the control plane waits three
    await asyncio.wait_for(agent.heartbeat(), NODE_LEASE_RENEW_S)
    after = await store.node_leases.get("node1")
    assert after is not None and (before is None or after.revision > before.revision)
    assert not any(task.done() for task in ending), "nothing ended before its grace"
    for task in ending:
        task.cancel()
    await asyncio.gather(*ending, return_exceptions=True)


async def test_a_launcher_that_ignores_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    launchers = StubbornLaunchers(NodePaths(tmp_path / "node1", tmp_path / "logs"))
    launcher = launchers.spawn("vm1", "uid-vm1")
    try:
        await asyncio.sleep(0.2)  # the shell's trap set
        started = time.monotonic()
        await launchers.terminate(launcher, grace=1.0)
        assert not launcher.alive()
        assert launcher.returncode() == -9  # killed, not ended by the SIGTERM
        assert time.monotonic() - started >= 1.0  # given its grace first
    finally:
        launchers.end_all()


async def test_a_launcher_that_ends_on_sigterm_is_not_killed(tmp_path: Path) -> None:
    launchers = Launchers(NodePaths(tmp_path / "node1", tmp_path / "logs"), node="node1", nats_url="nats://x",
                          netns_prefix="vbtest", kvm=False)
    proc = start(["sleep", "60"])
    launcher = Launcher("vm1", "uid-vm1", proc.pid, proc)
    try:
        await launchers.terminate(launcher, grace=30.0)
        assert launcher.returncode() == -15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
