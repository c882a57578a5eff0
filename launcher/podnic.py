"""The pod's network, made real in the launcher's namespace (the imperative half of the bindings):
a veth whose ``eth0`` end holds the pod IP and whose other end joins the node's pod bridge, and for
the masquerade binding the ``k6t-eth0`` bridge, the tap to the guest and the nftables ruleset.
"""

from __future__ import annotations

import hashlib
import subprocess
from ipaddress import IPv4Interface

from launcher.masquerade import Masquerade, compose_ruleset
from servicekit import nftables

NODE_POD_BRIDGE = "vbpods"  # made by the handler in the node's namespace
GUEST_BRIDGE = "k6t-eth0"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise OSError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def host_side_name(vmi: str) -> str:
    """The veth end on the node: a stable, valid interface name (<= 15 chars) per VMI."""
    return "vp" + hashlib.sha256(vmi.encode()).hexdigest()[:10]


def plumb_pod(*, vmi: str, pod_netns: str, node_netns: str | None, pod_ip: IPv4Interface, gateway: str) -> None:
    host_if = host_side_name(vmi)
    where = ["netns", node_netns] if node_netns else ["netns", "1"]
    _run(["ip", "-n", pod_netns, "link", "add", "eth0", "type", "veth", "peer", "name", host_if, *where])
    node = ["ip", "-n", node_netns] if node_netns else ["ip"]
    _run([*node, "link", "set", host_if, "master", NODE_POD_BRIDGE])
    # hairpin (kubelet's hairpin-veth): where br_netfilter runs on the node, a VM reaching its own
    # node port is DNATed back to its pod while bridged, out of the port it came in by
    _run([*node, "link", "set", host_if, "type", "bridge_slave", "hairpin", "on"])
    _run([*node, "link", "set", host_if, "up"])
    _run(["ip", "-n", pod_netns, "addr", "replace", str(pod_ip), "dev", "eth0"])
    _run(["ip", "-n", pod_netns, "link", "set", "eth0", "up"])
    _run(["ip", "-n", pod_netns, "route", "replace", "default", "via", gateway])


def bind_masquerade(*, pod_netns: str, tap: str, rules: Masquerade) -> None:
    ns = ["ip", "-n", pod_netns]
    _run([*ns, "link", "add", GUEST_BRIDGE, "type", "bridge"])
    _run([*ns, "addr", "replace", f"{rules.gateway}/24", "dev", GUEST_BRIDGE])
    _run([*ns, "link", "set", GUEST_BRIDGE, "up"])
    _run([*ns, "link", "set", tap, "master", GUEST_BRIDGE])
    _run([*ns, "link", "set", tap, "up"])
    _run(["ip", "netns", "exec", pod_netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    # 127.0.0.1 DNATed to the guest needs routing of local addresses on the guest's bridge
    _run(["ip", "netns", "exec", pod_netns, "sysctl", "-qw", f"net.ipv4.conf.{GUEST_BRIDGE}.route_localnet=1"])
    nftables.apply(compose_ruleset(rules), pod_netns)


DHCP_SERVER_ADDRESS = "169.254.75.10"  # on the guest's bridge, only to answer DHCP from (as KubeVirt)


def pod_mac(pod_netns: str) -> str:
    done = subprocess.run(["ip", "-n", pod_netns, "-o", "link", "show", "eth0"], capture_output=True, text=True,
                          check=True)
    words = done.stdout.split()
    return words[words.index("link/ether") + 1]


def bind_bridge(*, pod_netns: str, tap: str, pod_ip: IPv4Interface, nic: str = "eth0") -> str:
    """The bridge binding: the guest takes the NIC's IP (handed out by DHCP); the NIC becomes a
    port of k6t-<nic> with a random MAC and no address; a dummy keeps the address for reference.
    Returns the guest bridge, where the DHCP server listens."""
    ns = ["ip", "-n", pod_netns]
    bridge = f"k6t-{nic}"
    _run([*ns, "addr", "flush", "dev", nic])
    _run([*ns, "link", "set", nic, "down"])
    _run([*ns, "link", "set", nic, "address", random_mac()])
    _run([*ns, "link", "add", bridge, "type", "bridge"])
    _run([*ns, "link", "set", nic, "master", bridge])
    _run([*ns, "link", "set", tap, "master", bridge])
    _run(["bridge", "-n", pod_netns, "link", "set", "dev", nic, "learning", "off"])
    _run([*ns, "addr", "replace", f"{DHCP_SERVER_ADDRESS}/32", "dev", bridge])
    if _has_dummy(pod_netns):
        _run([*ns, "link", "add", f"{nic}-nic", "type", "dummy"])
        _run([*ns, "addr", "replace", str(pod_ip), "dev", f"{nic}-nic"])
    _run(["ip", "netns", "exec", pod_netns, "sysctl", "-qw", f"net.ipv4.conf.{bridge}.arp_ignore=1"])
    for link in (nic, tap, bridge):
        _run([*ns, "link", "set", link, "up"])
    return bridge


def plumb_secondary(*, vmi: str, index: int, pod_netns: str, node_netns: str | None, node_bridge: str) -> str:
    """A veth from the node's host bridge of a secondary network into the pod, as net<index>."""
    nic = f"net{index}"
    host_if = "vs" + hashlib.sha256(f"{vmi}/{index}".encode()).hexdigest()[:10]
    where = ["netns", node_netns] if node_netns else ["netns", "1"]
    _run(["ip", "-n", pod_netns, "link", "add", nic, "type", "veth", "peer", "name", host_if, *where])
    node = ["ip", "-n", node_netns] if node_netns else ["ip"]
    _run([*node, "link", "set", host_if, "master", node_bridge])
    _run([*node, "link", "set", host_if, "up"])
    _run(["ip", "-n", pod_netns, "link", "set", nic, "up"])
    return nic


def _has_dummy(pod_netns: str) -> bool:
    """Some kernels (this project's CI among them) have no dummy links; the address is also kept
    in the VMI's status, so the binding works without one."""
    done = subprocess.run(["ip", "-n", pod_netns, "link", "add", "eth0-nic", "type", "dummy"],
                          capture_output=True, text=True, check=False)
    if done.returncode == 0:
        subprocess.run(["ip", "-n", pod_netns, "link", "del", "eth0-nic"], capture_output=True, check=False)
        return True
    return False


def random_mac() -> str:
    import os

    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)
