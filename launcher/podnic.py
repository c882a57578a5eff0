"""The pod's network, made real in the launcher's namespace (the imperative half of the bindings):
a veth whose ``eth0`` end holds the pod IP and whose other end joins the node's pod bridge, and for
the masquerade binding the ``k6t-eth0`` bridge, the tap to the guest and the nftables ruleset.

Links, addresses and routes go through ``servicekit.netlink`` (one adapter per namespace, from
``netns_adapter``: a test passes a fake host's); sysctls written in the namespace; nftables through
libnftables. Every call here runs before the launcher reaps orphans: where a program still runs (nft
where libnftables is missing), its caller waits for it, and a reaper taking its exit status would
fail the call.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import structlog

from launcher.masquerade import Masquerade, compose_ruleset
from proto import dnsconfig
from proto.errors import Code
from proto.spec import VMSpec
from servicekit import netns_sysctl, nftables
from servicekit.netlink import KernelNetlink, Netlink, NetlinkError, NetnsAdapter
from servicekit.offload import tx_checksum_off
from servicekit.ovs import Ovs

log = structlog.get_logger()
NODE_POD_BRIDGE = "vbpods"  # made by the handler in the node's namespace
GUEST_BRIDGE = "k6t-eth0"
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
NODE_RESOLV_CONF = Path("/etc/resolv.conf")  # the node's: what dnsPolicy Default hands the guest


def _existing_ok(make: Callable[[], object]) -> None:
    """A link that is there already is taken as made (as ip(8)'s "File exists" was): the launcher
    may run again in a namespace it had set up."""
    _fails_with(Code.ALREADY_EXISTS, make)


def pod_veth(pod: Netlink, node: Netlink, name: str, host_if: str, node_netns: str | None) -> None:
    """A veth with ``name`` in the pod and ``host_if`` on the node. A pair already there is kept
    when its pod end is in this pod (a launcher run again in the namespace it had set up). A node
    end whose pod end is not here is an earlier pod's of the same VMI name (a restart): its
    namespace is gone by name, but the kernel frees a namespace, and the veths in it, only after
    its last user and then in a work queue of its own, so the old pair can outlive the name by a
    moment. That pair is deleted (both ends go) and ours made; taken as ours, the pod had no
    ``name`` and its first address failed with "No such device"."""
    if not _fails_with(Code.ALREADY_EXISTS, lambda: pod.create_veth(name, host_if, node_netns)):
        return
    if not _fails_with(Code.NOT_FOUND, lambda: pod.link_mac(name)):
        return  # the pod's own pair
    _fails_with(Code.NOT_FOUND, lambda: node.delete_link(host_if))  # not found: the kernel's teardown came first
    pod.create_veth(name, host_if, node_netns)


def _fails_with(code: Code, call: Callable[[], object]) -> bool:
    """Whether ``call`` failed with a NetlinkError of ``code``; any other failure is raised."""
    try:
        call()
    except NetlinkError as exc:
        if exc.code is not code:
            raise
        return True
    return False


def sysctl(pod_netns: str, *settings: str) -> None:
    """Sysctls of the pod's namespace, written in it by this thread (no ``ip netns exec sysctl``)."""
    netns_sysctl.write(pod_netns, settings)


def host_side_name(vmi: str) -> str:
    """The veth end on the node: a stable, valid interface name (<= 15 chars) per VMI."""
    return "vp" + hashlib.sha256(vmi.encode()).hexdigest()[:10]


def plumb_pod(*, vmi: str, pod_netns: str, node_netns: str | None, pod_ip: IPv4Interface, gateway: str,
              netns_adapter: NetnsAdapter = KernelNetlink) -> None:
    host_if = host_side_name(vmi)
    pod, node = netns_adapter(pod_netns), netns_adapter(node_netns)
    pod_veth(pod, node, "eth0", host_if, node_netns)
    node.set_master(host_if, NODE_POD_BRIDGE)
    # hairpin (kubelet's hairpin-veth): where br_netfilter runs on the node, a VM reaching its own
    # node port is DNATed back to its pod while bridged, out of the port it came in by
    node.set_port(host_if, hairpin=True)
    node.set_up(host_if)
    pod.replace_address("eth0", pod_ip)
    pod.set_up("eth0")
    pod.replace_route(DEFAULT_ROUTE, via=IPv4Address(gateway))


def bind_masquerade(*, pod_netns: str, tap: str, rules: Masquerade,
                    netns_adapter: NetnsAdapter = KernelNetlink) -> None:
    pod = netns_adapter(pod_netns)
    _existing_ok(lambda: pod.create_link(GUEST_BRIDGE, "bridge"))
    pod.replace_address(GUEST_BRIDGE, IPv4Interface(f"{rules.gateway}/24"))
    pod.set_up(GUEST_BRIDGE)
    pod.set_master(tap, GUEST_BRIDGE)
    pod.set_up(tap)
    sysctl(pod_netns, "net.ipv4.ip_forward=1")
    # 127.0.0.1 DNATed to the guest needs routing of local addresses on the guest's bridge
    sysctl(pod_netns, f"net.ipv4.conf.{GUEST_BRIDGE}.route_localnet=1")
    nftables.apply(compose_ruleset(rules), pod_netns)


DHCP_SERVER_ADDRESS = "169.254.75.10"  # on the guest's bridge, only to answer DHCP from (as KubeVirt)


def pod_mac(pod_netns: str, netns_adapter: NetnsAdapter = KernelNetlink) -> str:
    return netns_adapter(pod_netns).link_mac("eth0")


def bind_bridge(*, pod_netns: str, tap: str, pod_ip: IPv4Interface | None, nic: str = "eth0",
                netns_adapter: NetnsAdapter = KernelNetlink) -> str:
    """The bridge binding: the guest takes the NIC's IP (handed out by DHCP); the NIC becomes a
    port of k6t-<nic> with a random MAC and no address; a dummy keeps the address for reference.
    Returns the guest bridge, where the DHCP server listens. No pod_ip (a layer-2 network): no
    server here, the guest's DHCP goes through to the segment's own."""
    pod = netns_adapter(pod_netns)
    bridge = f"k6t-{nic}"
    pod.flush_addresses(nic)
    pod.set_up(nic, False)
    pod.set_mac(nic, random_mac())
    _existing_ok(lambda: pod.create_link(bridge, "bridge"))
    pod.set_master(nic, bridge)
    pod.set_master(tap, bridge)
    pod.set_port(nic, learning=False)
    if pod_ip is not None:
        pod.replace_address(bridge, IPv4Interface(f"{DHCP_SERVER_ADDRESS}/32"))
    if pod_ip is not None and _has_dummy(pod):
        _existing_ok(lambda: pod.create_link(f"{nic}-nic", "dummy"))
        pod.replace_address(f"{nic}-nic", pod_ip)
    sysctl(pod_netns, f"net.ipv4.conf.{bridge}.arp_ignore=1")
    for link in (nic, tap, bridge):
        pod.set_up(link)
    return bridge


DHCP_LOCAL_TABLE = "virtbus_dhcp"


def keep_dhcp_local(pod_netns: str, taps: list[str]) -> None:
    """A secondary NIC whose address virtbus gives: the guest's DHCP requests stop at the pod's
    bridge (its server answers them there) and never reach the segment, whose own DHCP server (a
    layer-2 network's, on the same bridge) would offer it another address first, or run short."""
    nftables.apply(nftables.filter_table(DHCP_LOCAL_TABLE, {"forward": [
        f'iifname "{tap}" udp dport 67 drop' for tap in taps]}, family="bridge"), pod_netns)


def secondary_host_side(vmi: str, index: int) -> str:
    """The node's end of a secondary NIC's veth: a stable, valid interface name per VMI and NIC."""
    return "vs" + hashlib.sha256(f"{vmi}/{index}".encode()).hexdigest()[:10]


def plumb_secondary(*, vmi: str, index: int, pod_netns: str, node_netns: str | None, node_bridge: str,
                    netns_adapter: NetnsAdapter = KernelNetlink, ovs: Ovs | None = None,
                    vlan: int | None = None) -> str:
    """A veth from the node's host bridge of a secondary network into the pod, as net<index>. With
    ``ovs`` the bridge is that Open vSwitch's, and the node's end its port (an access port of
    ``vlan``, if given), as ovs-cni makes it. On a Linux bridge, ``vlan`` makes the node's end an
    access port of it as the bridge CNI's ``vlan`` does, without VLAN filtering on the bridge
    (servicekit.vlanports)."""
    nic = f"net{index}"
    host_if = secondary_host_side(vmi, index)
    pod, node = netns_adapter(pod_netns), netns_adapter(node_netns)
    pod_veth(pod, node, nic, host_if, node_netns)
    if ovs is not None:
        tx_checksum_off(pod_netns, nic)  # the userspace datapath would pass the guest's checksums unfilled
        ovs.add_port(node_bridge, host_if, vlan)
    else:
        node.set_master(host_if, node_bridge)
        if vlan is not None:  # before the port is up: no frame crosses it untagged
            node.set_access_vlan(host_if, vlan)
    node.set_up(host_if)
    pod.set_up(nic)
    return nic


def _has_dummy(pod: Netlink) -> bool:
    """Some kernels (this project's CI among them) have no dummy links; the address is also kept
    in the VMI's status, so the binding works without one. (The probe is always ``eth0-nic``: a
    second bridge-bound NIC finds the first one's dummy there, and goes without.)"""
    try:
        pod.create_link("eth0-nic", "dummy")
    except NetlinkError:
        return False
    try:
        pod.delete_link("eth0-nic")
    except NetlinkError:
        pass  # as before: the probe's answer stands; bind_bridge's own add then finds it there
    return True


def random_mac() -> str:
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def guest_resolver(spec: VMSpec, resolv_conf: Path = NODE_RESOLV_CONF) -> dnsconfig.Resolver:
    """The name servers and search list the guest's DHCP lease names (proto.dnsconfig); the node's
    resolv.conf is read only for dnsPolicy Default, and one that cannot be read gives nothing."""
    host = dnsconfig.Resolver()
    if spec.dns_policy == "Default":
        try:
            host = dnsconfig.read_resolv_conf(resolv_conf.read_text(errors="replace"))
        except OSError as exc:
            log.warning("the node's resolv.conf is unreadable: the guest gets dnsConfig's servers only",
                        path=str(resolv_conf), error=str(exc))
    return dnsconfig.resolver(spec.dns_policy, spec.dns_config, host)
