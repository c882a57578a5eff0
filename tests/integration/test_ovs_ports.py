"""The lab's Open vSwitch as a node runs it (its own ovsdb-server and ovs-vswitchd in the node's
namespace, br1 on the userspace datapath, ctl.labovs) carries traffic between veths in other
namespaces that servicekit.ovs made its ports, and keeps VLANs apart."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctl import labovs
from ctl.lab import LabConfig
from ctl.labdhcp import OVS_DHCP, dnsmasq_command
from handler.secondary import SecondaryNetworks
from servicekit.fake_netlink import FakeNetlink
from servicekit.offload import tx_checksum_off
from servicekit.ovs import Ovs, bridges_or_none

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not labovs.available() or shutil.which("busybox") is None,
                                 reason="openvswitch-switch (or busybox) is not installed")]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[LabConfig, list[str]]]:
    """A lab node with its OVS and br1; (config, guest namespaces a, b, c)."""
    cfg = LabConfig(str(tmp_path), f"vbovs{secrets.token_hex(2)}", 0, nodes=["node1"])
    guests = [f"{cfg.prefix}-g{x}" for x in "abc"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (cfg.node_netns("node1"), *guests):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for name, cmd in labovs.daemon_commands(cfg, "node1"):
            with open(tmp_path / f"{name}.out", "wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=out))
        labovs.make_bridge(cfg, "node1")
        yield cfg, guests
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        for ns in (cfg.node_netns("node1"), *guests):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def ping(ns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c", "2", "-W", "2", address],
                          capture_output=True, check=False).returncode == 0


def test_ports_on_a_vlan_reach_each_other_and_no_other_vlan(node: tuple[LabConfig, list[str]]) -> None:
    cfg, guests = node
    switch = Ovs(labovs.db_url(cfg, "node1"))
    assert bridges_or_none(labovs.db_url(cfg, "node1")) == ["br1"]
    assert bridges_or_none(None) == []
    for i, (ns, vlan) in enumerate(zip(guests, (100, 100, 200), strict=True), start=1):
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"vs{i}", "netns", cfg.node_netns("node1"))
        ip("-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        switch.add_port("br1", f"vs{i}", vlan)
        ip("-n", cfg.node_netns("node1"), "link", "set", f"vs{i}", "up")
    assert ping(guests[0], "10.77.0.2")  # same VLAN, through the userspace datapath
    assert not ping(guests[0], "10.77.0.3")  # VLAN 200 is another segment
    switch.add_port("br1", "vs3", 100)  # again, now on VLAN 100: the tag changes
    assert ping(guests[0], "10.77.0.3")
    switch.del_port("vs3")
    switch.del_port("vs3")  # gone already: fine
    assert not ping(guests[0], "10.77.0.3")


def test_dhcp_crosses_the_userspace_datapath_with_checksums_filled_in(node: tuple[LabConfig, list[str]],
                                                                      tmp_path: Path) -> None:
    """UDP through the userspace datapath: the senders' veth ends checksum in software (as the
    launcher and the lab set them), or the client drops every offer."""
    cfg, guests = node
    switch = Ovs(labovs.db_url(cfg, "node1"))
    for i, ns in enumerate(guests[:2], start=1):
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"vs{i}", "netns", cfg.node_netns("node1"))
        ip("-n", ns, "link", "set", "eth0", "up")
        tx_checksum_off(ns, "eth0")
        switch.add_port("br1", f"vs{i}")
        ip("-n", cfg.node_netns("node1"), "link", "set", f"vs{i}", "up")
    ip("-n", guests[0], "addr", "add", "192.168.210.1/24", "dev", "eth0")
    server = subprocess.Popen(dnsmasq_command(guests[0], dataclasses.replace(OVS_DHCP, interface="eth0"), tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        got = subprocess.run(["ip", "netns", "exec", guests[1], "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
                              "-t", "5", "-s", "/bin/true"], capture_output=True, text=True, check=False, timeout=60)
    finally:
        server.terminate()
        server.wait(10)
    assert got.returncode == 0 and "lease of 192.168.210.1" in got.stderr + got.stdout, got


def test_a_node_says_why_an_ovs_network_cannot_run_there(node: tuple[LabConfig, list[str]], tmp_path: Path) -> None:
    cfg, _ = node
    here = SecondaryNetworks(None, netlink=FakeNetlink(), ovs_db=labovs.db_url(cfg, "node1"))
    assert here.missing_ovs_bridge("ovs-net-br1", "br1") is None
    assert "does not have (its OVS bridges: br1)" in (here.missing_ovs_bridge("n", "br9") or "")
    without = SecondaryNetworks(None, netlink=FakeNetlink())
    assert "runs no Open vSwitch" in (without.missing_ovs_bridge("n", "br1") or "")
    gone = SecondaryNetworks(None, netlink=FakeNetlink(), ovs_db=f"unix:{tmp_path}/nothing.sock")
    assert "this node's OVS" in (gone.missing_ovs_bridge("n", "br1") or "")
