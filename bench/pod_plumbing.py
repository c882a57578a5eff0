"""A launch's pod network plumbed N times, as the seed VM's launcher plumbs it (its namespace with lo
up, the guest's tap, the veth into the node's pod bridge with the pod IP and default route, the
masquerade binding's bridge with the tap on it; and before it, as its handler does, the node's
neighbour entry for the pod IP forgotten, on a bridge with one more port each time), in namespaces
of the bench's own (vbbench-*), all removed at the end: the CPU each stage takes per launch, and
whether every pod reaches its gateway.

Prints milliseconds of CPU per launch by stage (this process: the calls run in its threads).
Usage:
    .venv/bin/python bench/pod_plumbing.py [--pods 20]
Run with PYTHONPATH set to another checkout to measure that one (its adapter, whatever its name).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Interface
from pathlib import Path

sys.path.insert(0, os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1]))

from launcher import namespaces, podnic  # noqa: E402
from servicekit import netlink  # noqa: E402

# the real adapter: KernelNetlink since the requests are written directly, PyrouteNetlink before
ADAPTER = getattr(netlink, "KernelNetlink", None) or netlink.__dict__["PyrouteNetlink"]
GATEWAY = IPv4Interface("10.247.0.1/16")


def reaches_gateway(pod: str) -> bool:
    """ARP for the gateway from the pod (the node's bridge answers): the veth is wired and up."""
    code = ("import socket\ns = socket.socket(); s.settimeout(2)\n"
            f"try:\n    s.connect(('{GATEWAY.ip}', 9))\nexcept ConnectionRefusedError:\n    print('ok')\n"
            "except OSError:\n    pass")
    out = subprocess.run(["ip", "netns", "exec", pod, sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "ok"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=20)
    args = p.parse_args()
    tag = secrets.token_hex(2)
    node = f"vbbench-{tag}-node"
    pods = [f"vbbench-{tag}-p{i}" for i in range(args.pods)]
    spent: dict[str, float] = {}

    def timed(stage: str, work: Callable[[], object]) -> None:
        t = time.process_time()
        work()
        spent[stage] = spent.get(stage, 0.0) + time.process_time() - t

    made: list[str] = []
    try:
        namespaces.create_netns(node, netns_adapter=ADAPTER)
        made.append(node)
        ADAPTER(node).ensure_bridge(podnic.NODE_POD_BRIDGE)
        ADAPTER(node).replace_address(podnic.NODE_POD_BRIDGE, GATEWAY)
        for i, pod in enumerate(pods):
            timed("namespace", partial(namespaces.create_netns, pod, netns_adapter=ADAPTER))
            made.append(pod)
            timed("tap", partial(namespaces.create_tap, pod, "tap0", netns_adapter=ADAPTER))
            ip = IPv4Interface(f"10.247.{1 + i // 250}.{1 + i % 250}/16")
            # the handler's part, before it starts the launcher: the node forgets whatever the address's
            # last holder left in its neighbour table (handler.podnet.forget_neighbor)
            timed("node neighbour", partial(ADAPTER(node).flush_neighbours, ip.ip, podnic.NODE_POD_BRIDGE))
            timed("veth", partial(podnic.plumb_pod, vmi=f"bench-{tag}-{pod}", pod_netns=pod, node_netns=node,
                                  pod_ip=ip, gateway=str(GATEWAY.ip), netns_adapter=ADAPTER))

            def guest_bridge(pod: str = pod) -> None:
                a = ADAPTER(pod)
                a.create_link(podnic.GUEST_BRIDGE, "bridge")
                a.replace_address(podnic.GUEST_BRIDGE, IPv4Interface("10.0.2.1/24"))
                a.set_up(podnic.GUEST_BRIDGE)
                a.set_master("tap0", podnic.GUEST_BRIDGE)
                a.set_up("tap0")

            timed("guest bridge", guest_bridge)
        reached = sum(reaches_gateway(pod) for pod in pods)
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
    total = sum(spent.values())
    print(f"adapter: {ADAPTER.__module__}.{ADAPTER.__name__}; pods: {args.pods}, reaching their gateway: {reached}")
    print("CPU per launch: " + ", ".join(f"{stage} {1000 * s / args.pods:.2f} ms" for stage, s in spent.items())
          + f"; total {1000 * total / args.pods:.2f} ms")
    return 0 if reached == args.pods else 1


if __name__ == "__main__":
    sys.exit(main())
