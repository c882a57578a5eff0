"""What a node does with a VMI it must not run. A secondary network on a bridge its operator did not
allow: the control plane's node API refuses the attachment before it claims an address, and the
handler fails the VMI with the reason before it touches any bridge. A VMI stopped before any launcher
ran it: it ends Succeeded."""

from __future__ import annotations

import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from handler.agent import Agent
from handler.launchers import Launchers, NodePaths
from handler.podnet import PodNetwork
from proto import subjects
from proto.spec import Interface, Network, NetworkAttachment, VMSpec
from proto.state import VMI, Node, Phase
from scheduler.nodeapi import NodeApi
from servicekit.endpoints import serve
from servicekit.fake_netlink import FakeNetlink
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def reconcile_once(store: Store, node: Node, tmp_path: Path, vmi: str) -> Launchers:
    """One reconcile of the VMI by node1's agent, with the control plane's node API answering it."""
    launchers = Launchers(NodePaths(tmp_path / "node1", tmp_path / "logs"), node="node1", nats_url="nats://x",
                          netns_prefix="vbtest", kvm=False)
    service = await serve(store.nc, name="virtbus-nodeapi", version="0.1.0", description="test", queue="q",
                          endpoints=NodeApi(store).endpoints())
    try:
        podnet = PodNetwork(store, "node1", None, IPv4Network("10.244.0.0/24"), FakeNetlink())  # never the host's
        agent = Agent(store, node, launchers, podnet, NodeApiClient(store.nc, "node1"))
        await agent.reconcile(vmi)
    finally:
        await service.stop()
    return launchers


async def test_a_vmi_on_a_bridge_the_node_does_not_allow_fails_with_the_reason(store: Store, tmp_path: Path) -> None:
    networks = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)
    await networks.create("uplink", NetworkAttachment(name="uplink", bridge="eth0", subnet="192.168.7.0/24"))
    node = Node(name="node1", cpus=2, memory=2**31, kvm=False, heartbeat=time.time(), started_at=time.time(),
                allowed_bridges=["multus-bridge"])
    spec = VMSpec(name="vm1", interfaces=[Interface(name="ext", binding="bridge")],
                  networks=[Network(name="ext", kind="multus", network_name="uplink")])
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=time.time(), node_name="node1",
                                       phase=Phase.SCHEDULED))
    await store.nodes.create("node1", node)  # as registered: its allowed bridges are the control plane's to read
    launchers = await reconcile_once(store, node, tmp_path, "vm1")
    vmi = await store.vmis.require("vm1", "VMI")
    assert vmi.value.phase is Phase.FAILED
    assert "bridge 'eth0'" in vmi.value.reason and "multus-bridge" in vmi.value.reason
    assert launchers.running == {}
    assert await store.bucket(subjects.BUCKET_IPAM, dict[str, str]).get("net.uplink") is None  # no address claimed


async def test_a_vmi_on_a_vlan_fails_with_the_reason_where_the_kernel_makes_no_vlan_ports(store: Store,
                                                                                      tmp_path: Path) -> None:
    networks = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)
    await networks.create("br-vlan5", NetworkAttachment(name="br-vlan5", bridge="multus-bridge",
                                                        subnet="192.168.5.0/24", vlan=5))
    node = Node(name="node1", cpus=2, memory=2**31, kvm=False, heartbeat=time.time(), started_at=time.time(),
                allowed_bridges=["multus-bridge"], vlan_access_ports=False)
    spec = VMSpec(name="vm1", interfaces=[Interface(name="ext", binding="bridge")],
                  networks=[Network(name="ext", kind="multus", network_name="br-vlan5")])
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=time.time(), node_name="node1",
                                       phase=Phase.SCHEDULED))
    await store.nodes.create("node1", node)
    launchers = await reconcile_once(store, node, tmp_path, "vm1")
    vmi = await store.vmis.require("vm1", "VMI")
    assert vmi.value.phase is Phase.FAILED
    assert "VLAN 5" in vmi.value.reason and "cannot make VLAN access ports" in vmi.value.reason, vmi.value.reason
    assert launchers.running == {}
    assert await store.bucket(subjects.BUCKET_IPAM, dict[str, str]).get("net.br-vlan5") is None  # no address claimed


async def test_a_stop_before_any_launcher_ends_the_vmi(store: Store, tmp_path: Path) -> None:
    """Stopped while Scheduled, before its node spawned a launcher: it ends Succeeded (it stayed
    Scheduled forever), and no launcher runs."""
    node = Node(name="node1", cpus=2, memory=2**31, kvm=False, heartbeat=time.time(), started_at=time.time())
    await store.nodes.create("node1", node)
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=time.time(),
                                       node_name="node1", phase=Phase.SCHEDULED, stop_requested=True))
    launchers = await reconcile_once(store, node, tmp_path, "vm1")
    vmi = (await store.vmis.require("vm1", "VMI")).value
    assert vmi.phase is Phase.SUCCEEDED and vmi.reason == "stopped before it started"
    assert launchers.running == {} and not (tmp_path / "node1" / "vmis" / "vm1").exists()
