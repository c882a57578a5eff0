"""The guest's NICs, made in its pod: a tap each, the pod network's binding (masquerade, or bridge
with the pod's IP), the secondary networks, and the DHCP each of them needs. What it made is what the
launcher says with Running (``interfaces``) and what the domain's plan takes (``taps``, ``macs``).

The netlink, sysctl and nftables work is launcher.podnic's and launcher.secondarynics'; this is the
order it runs in and what it leaves to serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from ipaddress import IPv4Address, IPv4Interface

from launcher import namespaces, podnic, secondarynics
from launcher.dhcp_packet import Lease
from launcher.dhcp_server import serve_dhcp_in_netns
from launcher.dhcp_snoop import snoop_in_netns
from launcher.domain import stable_mac
from launcher.masquerade import Masquerade
from launcher.secondarynics import SecondaryArg
from proto.state import VMI, VMIInterface

LEASE_SECONDS = 86400


class GuestNics:
    def __init__(self, *, vmi: str, uid: str, pod_netns: str, node_netns: str | None, pod_ip: str | None,
                 pod_gateway: str | None, secondary: tuple[str, ...], ovs_db: str | None,
                 report: Callable[[list[VMIInterface]], Awaitable[None]]) -> None:
        self.vmi, self.uid, self.pod_netns, self.node_netns = vmi, uid, pod_netns, node_netns
        self.pod_ip, self.pod_gateway, self.secondary, self.ovs_db = pod_ip, pod_gateway, secondary, ovs_db
        self._report = report  # an address learnt after the launch (a layer-2 network's DHCP)
        self.taps: dict[str, str] = {}  # interface -> tap
        self.macs: dict[str, str] = {}  # interface -> the guest's MAC
        self.interfaces: list[VMIInterface] = []  # as last reported
        self.leases: list[tuple[Lease, str]] = []  # (lease, guest bridge it is served on)
        self._snoop: list[tuple[str, str, str]] = []  # (pod NIC, interface, guest MAC) of layer-2 networks
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def plumb(self, vmi: VMI) -> None:
        """Every NIC's tap, plumbing and binding; leaves a DHCP lease per guest bridge to serve."""
        self.taps = {iface.name: f"tap{i}" for i, iface in enumerate(vmi.spec.interfaces)}
        for tap in self.taps.values():
            await asyncio.to_thread(namespaces.create_tap, self.pod_netns, tap)
        statuses: list[VMIInterface] = []
        pod = next((n for n in vmi.spec.networks if n.kind == "pod"), None)
        if pod is not None and self.pod_ip is not None and self.pod_gateway is not None:
            statuses.append(await self._pod_nic(vmi, pod.name, self.taps[pod.name]))
        served = []
        for index, arg in enumerate(map(SecondaryArg.parse, self.secondary), start=1):
            iface = next(i for i in vmi.spec.interfaces if i.name == arg.interface)
            mac = iface.mac_address or stable_mac(self.uid, arg.interface)
            done = await asyncio.to_thread(secondarynics.plumb, vmi=self.vmi, index=index, arg=arg, mac=mac,
                                           tap=self.taps[arg.interface], pod_netns=self.pod_netns,
                                           node_netns=self.node_netns, ovs_db=self.ovs_db)
            self.macs[arg.interface] = mac
            statuses.append(done.status)
            if done.lease is not None:
                self.leases.append(done.lease)
                served.append(self.taps[arg.interface])
            if done.snoop is not None:
                self._snoop.append((done.snoop, arg.interface, mac))
        if served:
            await asyncio.to_thread(podnic.keep_dhcp_local, self.pod_netns, served)
        self.interfaces = statuses  # said with Running: one write of the VMI (and its fan-out) fewer per launch

    def serve(self) -> None:
        """DHCP for the guest on each of its bridges, and an ear on each layer-2 network's."""
        self._tasks = [asyncio.create_task(serve_dhcp_in_netns(self.pod_netns, lease, bridge, self._stop))
                       for lease, bridge in self.leases]
        self._tasks += [asyncio.create_task(snoop_in_netns(self.pod_netns, nic, mac, partial(self._learnt, name),
                                                           self._stop)) for nic, name, mac in self._snoop]

    def nic_names(self) -> dict[str, str]:
        """tap -> interface, as the guest's metrics name its NICs."""
        return {tap: iface for iface, tap in self.taps.items()}

    async def unplug(self) -> None:
        """Stops serving; takes its ports off the node's Open vSwitch (the pod's own links go with it)."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.to_thread(secondarynics.unplug_ovs, self.vmi, self.secondary, self.ovs_db)

    async def _learnt(self, name: str, ip: IPv4Address) -> None:
        """A layer-2 NIC's address, seen in the DHCP ACK of the segment's server."""
        self.interfaces = [VMIInterface(name=i.name, ip_address=str(ip), ip_addresses=[str(ip)], mac=i.mac)
                           if i.name == name else i for i in self.interfaces]
        await self._report(self.interfaces)

    async def _pod_nic(self, vmi: VMI, name: str, tap: str) -> VMIInterface:
        assert self.pod_ip is not None and self.pod_gateway is not None
        pod_ip = IPv4Interface(self.pod_ip)
        await asyncio.to_thread(podnic.plumb_pod, vmi=self.vmi, pod_netns=self.pod_netns, node_netns=self.node_netns,
                                pod_ip=pod_ip, gateway=self.pod_gateway)
        iface = next(i for i in vmi.spec.interfaces if i.name == name)
        names = podnic.guest_resolver(vmi.spec)
        if iface.binding == "masquerade":
            mac = iface.mac_address or stable_mac(self.uid, iface.name)
            rules = Masquerade(pod_ip=pod_ip.ip, ports=tuple(iface.ports))
            await asyncio.to_thread(podnic.bind_masquerade, pod_netns=self.pod_netns, tap=tap, rules=rules)
            lease = Lease(mac=mac, ip=rules.guest_ip, prefix=24, router=rules.gateway, dns=list(names.nameservers),
                          mtu=None, routes=[], hostname=vmi.spec.guest_hostname, lease_seconds=LEASE_SECONDS,
                          server_id=rules.gateway, domain=None, search=names.searches)
            bridge = podnic.GUEST_BRIDGE
        else:  # bridge: the guest takes the pod's IP and MAC
            nic_mac = await asyncio.to_thread(podnic.pod_mac, self.pod_netns)
            mac = iface.mac_address or nic_mac
            bridge = await asyncio.to_thread(podnic.bind_bridge, pod_netns=self.pod_netns, tap=tap, pod_ip=pod_ip)
            lease = Lease(mac=mac, ip=pod_ip.ip, prefix=pod_ip.network.prefixlen,
                          router=IPv4Address(self.pod_gateway), dns=list(names.nameservers), mtu=None, routes=[],
                          hostname=vmi.spec.guest_hostname, lease_seconds=LEASE_SECONDS,
                          server_id=IPv4Address(podnic.DHCP_SERVER_ADDRESS), domain=None, search=names.searches)
        self.leases.append((lease, bridge))
        self.macs[name] = mac
        return VMIInterface(name=name, ip_address=str(pod_ip.ip), ip_addresses=[str(pod_ip.ip)], mac=mac)
