"""Secondary networks, the api side (``virtbus.api.network.*``): NetworkAttachmentDefinitions applied,
read, listed and deleted, as ``kubectl apply|get|delete net-attach-def`` would.

A network is deleted only when nothing is on it: a running instance's NIC sits on its bridge, which
the guest fence of every node stops fencing once the network is gone (handler/guestfence.py), and a
floating IP is routed onto it. VMs that merely name it may stay, as in Kubernetes; they fail to start,
saying so, until it is applied again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network

from proto import ipam, subjects
from proto.api import Ack, ListRequest, NameRequest, NetworkList, NetworkReply, decode_request
from proto.errors import ApiError, Code
from proto.manifest import parse_manifest
from proto.spec import NetworkAttachment
from proto.state import FINAL_PHASES, VMI, FloatingIP
from proto.validation import check_name
from servicekit.store import Bucket, Store

_SUBNET = "spec.config.ipam.subnet"


def users(network: str, vmis: list[VMI], fips: list[FloatingIP]) -> list[str]:
    """Pure: what stands on the network, as a person is told it: instances not yet over, floating IPs."""
    on = [f"VMI {v.name}" for v in vmis if v.phase not in FINAL_PHASES and network in v.spec.multus_networks]
    return on + [f"floating IP {f.address}" for f in fips if f.network == network]


class NetworkApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.networks: Bucket[NetworkAttachment] = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)
        self.fips: Bucket[FloatingIP] = store.bucket(subjects.BUCKET_FLOATING_IPS, FloatingIP)
        self.tables: Bucket[dict[str, str]] = Bucket(store.raw[subjects.BUCKET_IPAM], dict[str, str])

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("network", "apply"): self.apply, ("network", "get"): self.get,
                ("network", "list"): self.list_all, ("network", "delete"): self.delete}

    async def apply(self, body: bytes) -> NetworkReply:
        parsed = parse_manifest(body, content_type="json")
        if not isinstance(parsed, NetworkAttachment):
            raise ApiError(Code.BAD_REQUEST, "this subject takes a NetworkAttachmentDefinition")
        if parsed.subnet is not None:  # a layer-2 network (no ipam) routes nothing and claims no range
            await self._check_subnet(parsed.name, IPv4Network(parsed.subnet))
        existing = await self.networks.get(parsed.name)
        if existing is None:
            await self.networks.create(parsed.name, parsed)
        elif existing.value != parsed:
            await self.networks.update(parsed.name, parsed, existing.revision)
        return NetworkReply(item=parsed)

    async def _check_subnet(self, name: str, subnet: IPv4Network) -> None:
        if subnet.overlaps(ipam.CLUSTER_CIDR):
            raise ApiError(Code.INVALID, f"subnet {subnet} overlaps the pod network {ipam.CLUSTER_CIDR}", _SUBNET)
        for other in await self.networks.items():
            if other.value.subnet and other.key != name and subnet.overlaps(IPv4Network(other.value.subnet)):
                raise ApiError(Code.INVALID, f"subnet {subnet} overlaps network {other.key} ({other.value.subnet})",
                               _SUBNET)
        # Each node routes the subnet onto the bridge (floating IPs): one holding a node's address
        # would take that node's own traffic, the bus's included, into the bridge.
        for node in await self.store.nodes.items():
            if node.value.address and IPv4Address(node.value.address) in subnet:
                raise ApiError(Code.INVALID, f"subnet {subnet} holds node {node.key}'s address {node.value.address}",
                               _SUBNET)

    async def get(self, body: bytes) -> NetworkReply:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "network name")
        return NetworkReply(item=(await self.networks.require(name, "network")).value)

    async def list_all(self, body: bytes) -> NetworkList:
        decode_request(body, ListRequest)
        return NetworkList(items=[e.value for e in sorted(await self.networks.items(), key=lambda e: e.key)])

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "network name")
        entry = await self.networks.require(name, "network")
        on = users(name, [e.value for e in await self.store.vmis.items()],
                   [e.value for e in await self.fips.items()])
        if on:
            raise ApiError(Code.CONFLICT, f"network {name} is in use by {', '.join(on)}; stop or delete them first")
        await self.networks.delete(name, entry.revision)  # Conflict if it was applied again meanwhile
        # the addresses VMs kept on it go with it: a network of that name applied later starts afresh
        if await self.tables.get(subjects.ipam_network(name)) is not None:
            await self.tables.delete(subjects.ipam_network(name))
        named = sorted(e.key for e in await self.store.vms.items() if name in e.value.spec.multus_networks)
        also = (f"; VMs {', '.join(named)} still name it and will not start until it is applied again"
                if named else "")
        return Ack(message=f"network {name} deleted{also}")
