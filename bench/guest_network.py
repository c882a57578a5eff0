"""Guest-to-guest figures over a secondary network, printed: ICMP round trip (busybox ping, N
echoes) and HTTP throughput (busybox wget of a file from the other guest's httpd), between two
guests on two nodes, the Open vSwitch network of the article (ovs-net-br1: each node's br1, the
userspace datapath, addresses from the segment's DHCP) against the Linux-bridge one of the seed
(multus-br on multus-bridge, addresses from virtbus), and the same bridge with VLAN 105's access ports
(multus-br-vlan105: servicekit.vlanports' eBPF programs on each port). Timed inside the guest (/proc/uptime), so TCG's
slowness is in every figure alike. Needs a lab (`virtbus lab up`) with the test image imported.
Usage:
    .venv/bin/python bench/guest_network.py [--server URL] [--pings 20] [--mb 8]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import entry  # bench/entry.py, beside this script
import virtbus_cli  # bench/virtbus_cli.py
import yaml

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {"linux-bridge": ("multus-br", REPO / "examples" / "multus-br.yaml"),
            "bridge-vlan": ("multus-br-vlan105", REPO / "examples" / "multus-br-vlan.yaml"),
            "ovs": ("ovs-net-br1", REPO / "examples" / "ovs-net-br1.yaml")}



def manifest(name: str, node: str, network: str) -> str:
    doc = yaml.safe_load((REPO / "examples" / "testvm-2-secondary.yaml").read_text())
    doc["metadata"]["name"] = name
    spec = doc["spec"]["template"]["spec"]
    spec["networks"][1]["multus"]["networkName"] = network
    spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    spec["domain"]["resources"]["requests"]["memory"] = "128M"  # room for the file it serves
    return json.dumps(doc)  # applied from stdin: no file left behind


def address(server: list[str], name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vmi: Any = json.loads(virtbus_cli.run(server, "get", "vmis", name, "-o", "json").stdout)
        nic: dict[str, Any] = next((i for i in vmi["status"].get("interfaces", []) if i["name"] == "ext-net"), {})
        if nic.get("ipAddress"):
            return str(nic["ipAddress"])
        time.sleep(1)
    raise RuntimeError(f"{name} has no address on its secondary network")


def run_in_guest(server: list[str], name: str, command: str, marker: str, timeout: float = 300) -> str:
    """The console's text after the command ran; the command's last line ends with MARKER-<n>."""
    virtbus_cli.run(server, "console", name, "--send", command + "\\n")
    out = virtbus_cli.run(server, "console", name, "--log", "--until", marker, "--timeout", str(int(timeout)),
                          timeout=timeout + 30).stdout
    return out.rsplit(command[:20], 1)[-1]


def measure(server: list[str], kind: str, pings: int, mb: int) -> tuple[float, float]:
    network, nad = NETWORKS[kind]
    virtbus_cli.run(server, "apply", "-f", str(nad))
    client, peer = f"bench-{kind}-a", f"bench-{kind}-b"
    try:
        virtbus_cli.run(server, "apply", "-f", "-", stdin=manifest(client, "node1", network))
        virtbus_cli.run(server, "apply", "-f", "-", stdin=manifest(peer, "node2", network))
        for name in (client, peer):
            virtbus_cli.run(server, "start", name, "--wait")
            virtbus_cli.run(server, "console", name, "--log", "--until", "VIRTBUS-GUEST-READY", "--timeout", "180")
        target = address(server, peer)
        address(server, client)
        run_in_guest(server, peer, f"dd if=/dev/zero of=/var/www/big bs=1M count={mb} 2>/dev/null; "
                     "echo FILE-$((6*7))", "FILE-42")
        out = run_in_guest(server, client, f"ping -c {pings} -i 0.2 {target} | tail -1; echo PING-$((6*7))",
                           "PING-42")
        rtt = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", out)
        out = run_in_guest(server, client, f"a=$(cut -d' ' -f1 /proc/uptime); wget -q -O /dev/null http://{target}/big"
                           " && echo TOOK $a $(cut -d' ' -f1 /proc/uptime); echo GOT-$((6*7))", "GOT-42")
        took = re.search(r"TOOK ([\d.]+) ([\d.]+)", out)
        if rtt is None or took is None:
            raise RuntimeError(f"no figures from the guest: {out[-400:]}")
        return float(rtt.group(1)), mb / max(float(took.group(2)) - float(took.group(1)), 0.01)
    finally:
        for name in (client, peer):
            virtbus_cli.run(server, "delete", name, "--wait", check=False, timeout=300)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="nats://127.0.0.1:4222")
    p.add_argument("--creds", default=None, help="the lab's admin seed (default: the CLI's)")
    p.add_argument("--pings", type=int, default=20)
    p.add_argument("--mb", type=int, default=8)
    p.add_argument("--only", choices=sorted(NETWORKS), default=None)
    args = p.parse_args()
    server = ["--server", args.server, *(["--creds", args.creds] if args.creds else [])]
    for kind in [args.only] if args.only else NETWORKS:
        rtt, mbps = measure(server, kind, args.pings, args.mb)
        print(f"{kind:12} guest node1 -> guest node2 over {NETWORKS[kind][0]}: ping RTT avg {rtt:.3f} ms "
              f"({args.pings} echoes), HTTP throughput {mbps:.2f} MiB/s ({args.mb} MiB)", flush=True)


if __name__ == "__main__":
    entry.run(main, "guest_network.py")
