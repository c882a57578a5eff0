"""A node starts only so many instances at once: the rest wait, oldest first, and each starts as soon
as one before it runs (handler.launchslots through the real agent and store; each launcher stands in
as a real process that does nothing)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path

import msgspec
import pytest

from handler.agent import Agent
from handler.launchers import Launcher, Launchers, NodePaths
from handler.nodeinfo import MemInfo
from handler.podnet import PodNetwork
from handler.residentfiles import PAGE, ResidentFiles
from handler.warmmemory import GIB, MIB, AnonymousMemory, WarmMemory
from proto.spec import VMSpec
from proto.state import VMI, Node, Phase
from scheduler.nodeapi import NodeApi
from servicekit import cpugroup
from servicekit.endpoints import serve
from servicekit.fake_netlink import FakeNetlink
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

pytestmark = pytest.mark.integration


class IdleLaunchers(Launchers):
    """Launchers whose processes are `sleep`s: spawned, alive and ended as real ones are."""

    def __init__(self, paths: NodePaths) -> None:
        super().__init__(paths, node="node1", nats_url="nats://x", netns_prefix="vbtest", kvm=False)
        self.spawned: list[str] = []

    def spawn(self, vmi: str, uid: str, pod_ip: str | None = None, pod_gateway: str | None = None,
              secondary: list[str] | None = None, migration: str | None = None) -> Launcher:
        proc = subprocess.Popen(["sleep", "60"])
        self.spawned.append(vmi)
        self.running[vmi] = Launcher(vmi, uid, proc.pid, proc)
        return self.running[vmi]

    def end_all(self) -> None:
        for launcher in self.running.values():
            if isinstance(launcher.proc, subprocess.Popen):
                launcher.proc.kill()
                launcher.proc.wait()


@pytest.fixture
async def node(store: Store, tmp_path: Path) -> AsyncIterator[tuple[Agent, IdleLaunchers]]:
    record = Node(name="node1", cpus=8, memory=2**33, kvm=False, heartbeat=time.time(), started_at=time.time())
    await store.nodes.create("node1", record)
    launchers = IdleLaunchers(NodePaths(tmp_path / "node1", tmp_path / "logs"))
    service = await serve(store.nc, name="virtbus-nodeapi", version="0.1.0", description="test", queue="q",
                          endpoints=NodeApi(store).endpoints())
    podnet = PodNetwork(store, "node1", None, IPv4Network("10.244.0.0/24"), FakeNetlink())  # never the host's
    agent = Agent(store, record, launchers, podnet, NodeApiClient(store.nc, "node1"), parallel_launches=2)
    try:
        yield agent, launchers
    finally:
        await agent.stop()  # before the launchers end: their ends are not this test's
        launchers.end_all()
        await service.stop()


async def bound(store: Store, name: str, created: float) -> None:
    await store.vmis.create(name, VMI(name=name, uid=f"uid-{name}", spec=VMSpec(name=name), created_at=created,
                                      node_name="node1", phase=Phase.SCHEDULED))


async def set_phase(store: Store, name: str, phase: Phase) -> None:
    entry = await store.vmis.require(name, "VMI")
    await store.vmis.update(name, msgspec.structs.replace(entry.value, phase=phase), entry.revision)


async def until(what: str, check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)


async def test_two_start_at_once_and_the_rest_in_order_of_creation(
        store: Store, node: tuple[Agent, IdleLaunchers]) -> None:
    agent, launchers = node
    now = time.time()
    created = {"vm1": now, "vm2": now + 1, "vm3": now + 2, "vm4": now + 3}
    for name in ("vm1", "vm2", "vm4", "vm3"):  # vm4 reaches the node before vm3, which is older
        await bound(store, name, created[name])
        await agent.reconcile(name)
    assert launchers.spawned == ["vm1", "vm2"]  # two at once; the others wait, Scheduled

    await set_phase(store, "vm1", Phase.RUNNING)
    await agent.reconcile("vm1")  # as the watch of its copy would: vm1 runs, its slot goes to vm3
    await until("vm3 spawned", lambda: launchers.spawned == ["vm1", "vm2", "vm3"])
    await asyncio.sleep(0.3)
    assert "vm4" not in launchers.spawned

    await set_phase(store, "vm2", Phase.FAILED)  # an end frees a slot as a start does
    await agent.reconcile("vm2")
    await until("vm4 spawned", lambda: launchers.spawned[-1] == "vm4")


async def test_a_waiting_instance_deleted_is_not_started_and_holds_nobody_up(
        store: Store, node: tuple[Agent, IdleLaunchers]) -> None:
    agent, launchers = node
    now = time.time()
    for i, name in enumerate(("vm1", "vm2", "gone", "vm3")):
        await bound(store, name, now + i)
        await agent.reconcile(name)
    assert launchers.spawned == ["vm1", "vm2"]
    await store.vmis.delete("gone")
    await agent.reconcile("gone")
    await set_phase(store, "vm1", Phase.RUNNING)
    await agent.reconcile("vm1")
    await until("vm3 spawned", lambda: launchers.spawned[-1] == "vm3")
    assert "gone" not in launchers.spawned


async def test_a_launch_slower_than_its_hold_lets_the_next_one_start(
        store: Store, node: tuple[Agent, IdleLaunchers]) -> None:
    """An image still downloading, say: after hold_s the next in line starts beside it."""
    agent, launchers = node
    agent.slots.hold_s = 0.5
    agent.slots.size = 1
    now = time.time()
    for i, name in enumerate(("slow", "next")):
        await bound(store, name, now + i)
        await agent.reconcile(name)
    assert launchers.spawned == ["slow"]
    await asyncio.sleep(0.6)
    for name in agent.slots.expire(time.time()):  # what the agent's supervision loop does every 2 s
        agent.queue.kick(name)
    await until("next spawned", lambda: launchers.spawned == ["slow", "next"])


@pytest.fixture
def guests_group() -> Iterator[Path]:
    """A real CPU group of this test's own, as a node's guests' (servicekit.cpugroup); removed after."""
    group = cpugroup.make(f"vbtest-{secrets.token_hex(4)}-guests")
    if group is None or not (group / "cpu.idle").exists():
        pytest.skip("needs cgroup v1's cpu hierarchy with cpu.idle (root, Linux 5.15+)")
    try:
        yield group
    finally:
        cpugroup.remove(group)


async def test_guests_yield_the_cpu_while_their_node_launches(
        store: Store, node: tuple[Agent, IdleLaunchers], guests_group: Path) -> None:
    agent, launchers = node
    agent.guests = guests_group  # the node's guests' group, as handler.__main__ makes it

    def idle() -> str:
        return (guests_group / "cpu.idle").read_text().strip()

    now = time.time()
    for i, name in enumerate(("vm1", "vm2", "vm3")):
        await bound(store, name, now + i)
        await agent.reconcile(name)
    assert idle() == "1"  # two launch, one waits: the guests run only where nothing else would
    for name in ("vm1", "vm2"):
        await set_phase(store, name, Phase.RUNNING)
        await agent.reconcile(name)
    await until("vm3 spawned", lambda: launchers.spawned == ["vm1", "vm2", "vm3"])
    assert idle() == "1"  # vm3 still launching
    await set_phase(store, "vm3", Phase.RUNNING)
    await agent.reconcile("vm3")
    assert idle() == "0"
    assert (guests_group / "cpu.shares").read_text().strip() == str(cpugroup.GUEST_SHARES)  # not 1024

    await bound(store, "vm4", now + 4)
    await agent.reconcile("vm4")
    assert idle() == "1"
    await agent.stop()  # a stopped handler launches nothing: the guests get their weight back
    assert idle() == "0" and (guests_group / "cpu.shares").read_text().strip() == str(cpugroup.GUEST_SHARES)


class RecordedLocks:
    """FileLocks that note what they are asked to lock (tests/integration/test_resident_files.py locks
    for real)."""

    def __init__(self) -> None:
        self.asked: dict[str, list[tuple[int, int]]] = {}

    def lock(self, path: str, pages: list[tuple[int, int]]) -> int:
        self.asked.setdefault(path, []).extend(pages)
        return sum(count for _, count in pages) * PAGE

    def release_all(self) -> None:
        self.asked.clear()


async def test_the_files_of_a_launch_that_runs_are_kept_in_memory(
        store: Store, node: tuple[Agent, IdleLaunchers]) -> None:
    agent, launchers = node
    locks = RecordedLocks()
    agent.resident_files = ResidentFiles(locks)  # as handler.__main__ gives it (--keep-launch-files)
    now = time.time()
    for i, name in enumerate(("failing", "vm1")):
        await bound(store, name, now + i)
        await agent.reconcile(name)
    launcher_exe = os.path.realpath(f"/proc/{launchers.running['vm1'].pid}/exe")

    await set_phase(store, "failing", Phase.FAILED)
    await agent.reconcile("failing")
    assert locks.asked == {}  # a launch that failed taught nothing
    await set_phase(store, "vm1", Phase.RUNNING)
    await agent.reconcile("vm1")
    assert launcher_exe in locks.asked  # its launcher's program and libraries, as far as it used them
    assert agent.resident_files.locked == sum(c for runs in locks.asked.values() for _, c in runs) * PAGE


def resident_of(address: int) -> int:
    """Bytes of this process's mapping at ``address`` in memory (its smaps Rss)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{address:x}-"))
    rss = next(line for line in lines[start + 1:] if line.startswith("Rss:"))
    return int(rss.split()[1]) * 1024


async def test_a_launch_takes_its_worth_of_warm_memory_and_the_quiet_node_refills_it(
        store: Store, node: tuple[Agent, IdleLaunchers]) -> None:
    agent, launchers = node
    memory = AnonymousMemory(256 * MIB)  # real memory: what the kernel has mapped is read back from smaps
    plenty = MemInfo(total=64 * GIB, available=48 * GIB)  # the box's own figures have no part in it
    agent.warm_memory = WarmMemory(memory, 256 * MIB, lambda: plenty)  # as handler.__main__ gives it
    try:
        await agent.keep_memory_warm()  # what the agent's supervision loop does every 2 s
        await until("256 MiB warm", lambda: agent.warm_memory is not None and agent.warm_memory.held == 256 * MIB)
        assert resident_of(memory.address) == 256 * MIB

        now = time.time()
        for i, name in enumerate(("vm1", "vm2", "vm3")):
            await bound(store, name, now + i)
            await agent.reconcile(name)
        assert launchers.spawned == ["vm1", "vm2"]  # two launches began, each given 80 MiB to take
        assert agent.warm_memory.held == resident_of(memory.address) == 96 * MIB
        await agent.keep_memory_warm()
        await asyncio.sleep(0.3)
        assert agent.warm_memory.held == 96 * MIB  # launches under way: no refill

        for name in ("vm1", "vm2"):
            await set_phase(store, name, Phase.RUNNING)
            await agent.reconcile(name)
        await until("vm3 spawned", lambda: launchers.spawned[-1] == "vm3")
        await set_phase(store, "vm3", Phase.RUNNING)
        await agent.reconcile("vm3")
        assert agent.warm_memory.held == 16 * MIB
        await agent.keep_memory_warm()  # the burst is over
        await until("refilled", lambda: agent.warm_memory is not None and agent.warm_memory.held == 256 * MIB)
        assert resident_of(memory.address) == 256 * MIB
    finally:
        await agent.stop()  # gives it back and waits for the refill's thread
        assert resident_of(memory.address) == 0
        memory.close()
