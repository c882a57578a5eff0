"""Guest networking figures, printed: time from start to the guest holding its DHCP lease (median
of N), and TCP round-trip latency and throughput from another node's namespace to the guest's echo
service (port 7), masquerade vs bridge binding. Needs a lab with the test image imported
(scripts/lab.sh makes one). Usage:
    .venv/bin/python bench/network.py [--runs 5] [--state-dir /var/lib/virtbus/lab] [--server URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import entry  # bench/entry.py, beside this script
import virtbus_cli  # bench/virtbus_cli.py

IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"
# Runs inside a node's namespace: N one-byte round trips, then MB bytes through the echo and back.
PROBE = r"""
import socket, statistics, sys, time
host, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, 7), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(n):
    t = time.perf_counter(); s.sendall(b"x"); s.recv(1); rtts.append(time.perf_counter() - t)
block, total, got = b"y" * 65536, mb * 2**20, 0
t = time.perf_counter()
sent = 0
s.setblocking(True)
while got < total:
    if sent < total:
        s.sendall(block); sent += len(block)
    while got < sent:
        got += len(s.recv(1 << 20))
took = time.perf_counter() - t
print(statistics.median(rtts) * 1000, total * 2 / took / 2**20)
"""



def manifest(name: str, binding: str) -> str:
    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
           "spec": {"running": False, "template": {"spec": {
               "domain": {"resources": {"requests": {"memory": "64M"}},
                          "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                      "interfaces": [{"name": "default", binding: {}}]}},
               "networks": [{"name": "default", "pod": {}}],
               "volumes": [{"name": "root", "containerDisk": {"image": IMAGE}}]}}}}
    return json.dumps(doc)  # applied from stdin: no file left behind


def lease_time(server: list[str], name: str) -> float:
    t0 = time.monotonic()
    virtbus_cli.run(server, "start", name, "--wait")
    virtbus_cli.run(server, "console", name, "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--state-dir", default="/var/lib/virtbus/lab")
    p.add_argument("--server", default="nats://127.0.0.1:4222")
    p.add_argument("--mb", type=int, default=8)
    args = p.parse_args()
    server = ["--server", args.server]
    for binding in ("masquerade", "bridge"):
        name = f"bench-{binding}"
        virtbus_cli.run(server, "apply", "-f", "-", stdin=manifest(name, binding))
        try:
            leases = []
            for _ in range(args.runs):
                leases.append(lease_time(server, name))
                virtbus_cli.run(server, "stop", name, "--wait")
            virtbus_cli.run(server, "start", name, "--wait")
            virtbus_cli.run(server, "console", name, "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
            vmi = json.loads(virtbus_cli.run(server, "get", "vmis", name, "-o", "json").stdout)
            node = "node2" if vmi["status"]["nodeName"] == "node1" else "node1"
            pod_ip = vmi["status"]["interfaces"][0]["ipAddress"]
            out = virtbus_cli.run([], "lab", "exec", "--state-dir", args.state_dir, node,
                                  "--", sys.executable, "-c", PROBE, pod_ip, "200", str(args.mb))
            rtt, mbps = (float(x) for x in out.stdout.split())
            print(f"{binding:10} start->DHCP lease median of {args.runs}: {statistics.median(leases):.2f}s "
                  f"(runs: {', '.join(f'{x:.2f}' for x in leases)}); from {node}: TCP echo RTT median "
                  f"{rtt:.3f} ms, throughput {mbps:.1f} MiB/s ({args.mb} MiB each way)", flush=True)
        finally:
            virtbus_cli.run(server, "delete", name, "--wait")


if __name__ == "__main__":
    entry.run(main, "network.py")
