"""Services on this node (kube-proxy's job, in nftables): a Service's virtual IP and its node ports
lead to one of its endpoints, wherever in the cluster that runs, chosen at random per connection.

One table in the node's namespace, replaced whole whenever Services or Endpoints change. Traffic
that was led so is masqueraded on its way out, so the endpoint's reply comes back through this node
to be translated back (an endpoint on another node would otherwise answer the client directly,
and one on this node answering a client on this node would skip the bridge's conntrack). A Service
with no endpoint refuses connections at once, as kube-proxy's does, instead of letting them leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from proto import netcheck, subjects
from proto.state import Endpoints, Service, ServicePort, ServiceType
from servicekit import nftables
from servicekit.informer import Informer, shared
from servicekit.nftables import nat_table
from servicekit.resync import resync_on_changes
from servicekit.store import Store

log = structlog.get_logger()
TABLE = "virtbus_services"
MARK = "0x5642"  # "VB": led by a Service rule, masqueraded in postrouting
MAX_TARGETS = 1024


def targets(port: ServicePort, endpoints: Endpoints | None) -> list[tuple[str, int]]:
    """Pure: where a Service port leads: each endpoint address on the endpoint port of the same name
    (Kubernetes matches them by name; an unnamed one matches the only, unnamed, port)."""
    out: list[tuple[str, int]] = []
    for subset in endpoints.subsets if endpoints else []:
        match = [p for p in subset.ports if p.name == port.name and p.protocol == port.protocol]
        if not match and not subset.ports:
            match_port = port.target_port  # hand-written addresses without ports: the target port
        elif match:
            match_port = match[0].port
        else:
            continue
        out += [(a.ip, match_port) for a in subset.addresses]
    return sorted(set(out))[:MAX_TARGETS]


def _lead(match: str, to: list[tuple[str, int]]) -> str:
    if not to:
        return f"{match} reject"
    chosen = ", ".join(f"{i} : {netcheck.host_address(ip, 'endpoint')} . {netcheck.port(port, 'endpoint port')}"
                       for i, (ip, port) in enumerate(to))
    return f"{match} meta mark set {MARK} dnat ip to numgen random mod {len(to)} map {{ {chosen} }}"


def compose_services(services: list[Service], endpoints: Mapping[str, Endpoints]) -> str:
    """Pure: the nft script for every Service. Every value is checked again where it becomes rule
    text, whatever wrote the buckets (ApiError otherwise)."""
    rules = []
    for service in sorted(services, key=lambda s: s.name):
        for port in service.ports:
            protocol = netcheck.protocol(port.protocol, "protocol").lower()
            to = targets(port, endpoints.get(service.name))
            if not service.headless:
                address = netcheck.ipv4(service.cluster_ip, "clusterIP")
                rules.append(_lead(f"ip daddr {address} {protocol} dport {netcheck.port(port.port, 'port')}", to))
            if port.node_port is not None:
                node_port = netcheck.node_port(port.node_port, "nodePort")
                rules.append(_lead(f"fib daddr type local {protocol} dport {node_port}", to))
            for ip in service.external_ips:  # routed to the nodes by the network's owner, as Kubernetes has it
                address = netcheck.host_address(ip, "externalIPs")
                rules.append(_lead(f"ip daddr {address} {protocol} dport {netcheck.port(port.port, 'port')}", to))
            if service.type is ServiceType.LOAD_BALANCER and service.load_balancer_ip is not None:
                external = netcheck.host_address(service.load_balancer_ip, "loadBalancerIP")
                rules.append(_lead(f"ip daddr {external} {protocol} dport {netcheck.port(port.port, 'port')}", to))
    return nat_table(TABLE, {"prerouting": rules, "output": rules,
                             "postrouting": [f"meta mark {MARK} masquerade"]})


class ServiceRules:
    def __init__(self, store: Store, netns: str | None) -> None:
        self.netns = netns
        # the process's informers: one watch of each for the rules, cluster DNS and the router
        self.services: Informer[Service] = shared(store, store.bucket(subjects.BUCKET_SERVICES, Service))
        self.endpoints: Informer[Endpoints] = shared(store, store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints))
        self.rules = nftables.Applier(netns)

    async def run(self) -> None:
        await self.sync()  # a node with no Service still gets its (empty) table
        await resync_on_changes([self.services.changes(), self.endpoints.changes()], self.sync, "services")

    async def sync(self) -> None:
        services = [e.value for e in await self.services.items()]
        endpoints = {e.key: e.value for e in await self.endpoints.items()}
        script = compose_services(services, endpoints)
        if not await asyncio.to_thread(self.rules.apply, script):
            return
        log.info("services applied", services=len(services), rules=script.count(" dnat ip to ") // 2)
