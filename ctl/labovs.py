"""The lab's Open vSwitch: each node runs its own ovsdb-server and ovs-vswitchd inside its namespace,
with its database, run, log and PID files under <state>/ovs/<node> (never the host's
/var/run/openvswitch), and bridge ``br1`` on the userspace datapath (``datapath_type=netdev``: the
kernel's openvswitch module may be missing, and the lab loads no module). Every node's br1 has port
``ovs0``, a veth onto the lab-wide segment ``ovsseg0`` (a bridge in the lab's namespace), where the
outside host sits too (eth2, 192.168.210.1) with its own DHCP server (ctl.labdhcp): two nodes' br1
reach each other, as the article's OVS network does."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from servicekit.offload import tx_checksum_off

if TYPE_CHECKING:
    from ctl.lab import LabConfig

OVS_BRIDGE = "br1"
SEGMENT_BRIDGE = "ovsseg0"  # in the lab's namespace
NODE_UPLINK = "ovs0"  # each node's port of br1 onto the segment
OUTSIDE_LINK, OUTSIDE_ADDRESS = "eth2", "192.168.210.1/24"
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def available() -> bool:
    return all(shutil.which(tool) for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool"))


def node_dir(cfg: LabConfig, node: str) -> Path:
    return cfg.root / "ovs" / node


def db_url(cfg: LabConfig, node: str) -> str:
    return f"unix:{node_dir(cfg, node) / 'db.sock'}"


def make_segment(cfg: LabConfig) -> None:
    """The segment: its bridge in the lab namespace, a veth to each node (ovs0) and to the outside host."""
    from ctl.lab import _ip

    lab = cfg.lab_netns
    _ip("link", "add", SEGMENT_BRIDGE, "type", "bridge", netns=lab)
    _ip("link", "set", SEGMENT_BRIDGE, "up", netns=lab)
    ends = [(cfg.node_netns(node), NODE_UPLINK, f"o{i}") for i, node in enumerate(cfg.nodes, start=1)]
    for ns, inner, outer in [*ends, (cfg.outside_netns, OUTSIDE_LINK, "out2")]:
        if subprocess.run(["ip", "-n", ns, "link", "show", inner], capture_output=True, check=False).returncode:
            _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", lab, netns=lab)
        _ip("link", "set", inner, "up", netns=ns)
        _ip("link", "set", outer, "master", SEGMENT_BRIDGE, netns=lab)
        _ip("link", "set", outer, "up", netns=lab)
        # frames into a node's br1 (userspace datapath) must carry their checksums filled in
        tx_checksum_off(lab, outer)
    _ip("addr", "add", OUTSIDE_ADDRESS, "dev", OUTSIDE_LINK, netns=cfg.outside_netns)


def daemon_commands(cfg: LabConfig, node: str) -> list[tuple[str, list[str]]]:
    """(supervised name, command) of the node's ovsdb-server and ovs-vswitchd, in the foreground;
    its database is made here if it is not there."""
    d = node_dir(cfg, node)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "conf.db").exists():
        subprocess.run(["ovsdb-tool", "create", str(d / "conf.db"), str(SCHEMA)], check=True, capture_output=True)
    # OVS_RUNDIR: where vswitchd puts a bridge's management sockets (br1.mgmt), else /var/run/openvswitch
    env = ["env", f"OVS_RUNDIR={d}", f"OVS_LOGDIR={d}", f"OVS_DBDIR={d}"]
    netns = ["ip", "netns", "exec", cfg.node_netns(node)]
    common = ["--no-chdir", f"--log-file={d}/%s.log", f"--pidfile={d}/%s.pid", f"--unixctl={d}/%s.ctl"]
    return [
        (f"ovsdb-server-{node}", [*env, *netns, "ovsdb-server", str(d / "conf.db"), f"--remote=punix:{d}/db.sock",
                                  *(c.replace("%s", "ovsdb-server") for c in common)]),
        (f"ovs-vswitchd-{node}", [*env, *netns, "ovs-vswitchd", db_url(cfg, node), "--disable-system-route",
                                  *(c.replace("%s", "ovs-vswitchd") for c in common)]),
    ]


def make_bridge(cfg: LabConfig, node: str, timeout: float = 20) -> None:
    """br1 (userspace datapath) with its uplink ovs0, once the node's ovsdb-server answers."""
    vsctl = ["ovs-vsctl", f"--db={db_url(cfg, node)}", "--timeout=10"]
    deadline = time.monotonic() + timeout
    while subprocess.run([*vsctl, "--no-wait", "init"], capture_output=True, check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ovsdb-server of {node} did not answer within {timeout:.0f}s")
        time.sleep(0.2)
    subprocess.run([*vsctl, "--may-exist", "add-br", OVS_BRIDGE, "--", "set", "bridge", OVS_BRIDGE,
                    "datapath_type=netdev", "--", "--may-exist", "add-port", OVS_BRIDGE, NODE_UPLINK],
                   check=True, capture_output=True, timeout=30)
