"""The handler fails closed: its guests' fence stands before it adopts or spawns any launcher, and a
handler whose fence nft refuses does not start."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, cast

import pytest

from handler.agent import Agent
from handler.launchers import Launchers, NodePaths
from handler.podnet import PodNetwork
from proto.state import Node
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

pytestmark = pytest.mark.integration


class RecordingLaunchers:
    """Launchers that run nothing and note whether the fence was in the node's namespace when asked."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.paths = NodePaths(Path(tempfile.gettempdir()), Path(tempfile.gettempdir()))  # free disk is read there
        self.running: dict[str, Any] = {}
        self.fence_at_adopt: str | None = None

    def adopt_all(self) -> list[Any]:
        done = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "list", "table", "inet", "virtbus_fence"],
                              capture_output=True, text=True, check=False)
        self.fence_at_adopt = done.stdout if done.returncode == 0 else ""
        return []

    def reap_warming(self) -> bool:
        return False  # no probe of QEMU's capabilities runs here (the supervision loop reaps one)


async def agent_on(store: Store, netns: str) -> tuple[Agent, RecordingLaunchers]:
    podnet = PodNetwork(store, "n1", netns, IPv4Network("10.244.0.0/24"))
    launchers = RecordingLaunchers(netns)
    node = Node(name="n1", cpus=1, memory=1 << 30, kvm=False, heartbeat=0.0, started_at=0.0, address="10.99.0.11",
                pod_cidr=str(podnet.cidr))
    return Agent(store, node, cast(Launchers, launchers), podnet, NodeApiClient(store.nc, "n1"),
                 management=IPv4Network("10.99.0.0/24")), launchers


async def test_the_fence_stands_before_any_launcher(store: Store, scratch_netns: str) -> None:
    agent, launchers = await agent_on(store, scratch_netns)
    await agent.start()
    try:
        assert launchers.fence_at_adopt is not None  # asked once, at start
        assert "hook input" in launchers.fence_at_adopt and "ip daddr 10.99.0.0/24" in launchers.fence_at_adopt
    finally:
        await agent.stop()


async def test_no_fence_no_handler(store: Store) -> None:
    missing = f"vbfence-missing-{secrets.token_hex(3)}"  # nft cannot run there, so the fence cannot stand
    agent, launchers = await agent_on(store, missing)
    with pytest.raises(RuntimeError, match="nft"):
        await agent.start()
    assert launchers.fence_at_adopt is None  # never got as far as launchers
    assert await store.nodes.get("n1") is None  # nor announced the node as ready for guests
