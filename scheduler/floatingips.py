"""Floating IPs, the api side: an address of a provider network, claimed once (KV create), then
attached to a VM; the node running the VM does the 1:1 NAT (handler/floatingips.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from proto import netcheck, subjects
from proto.api import Ack, FloatingIPList, FloatingIPRequest, ListRequest, decode_request
from proto.errors import ApiError, Code
from proto.spec import NetworkAttachment
from proto.state import FloatingIP, floating_ip_key
from proto.validation import check_name
from servicekit.store import Bucket, Store


class FloatingIPApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.bucket: Bucket[FloatingIP] = store.bucket(subjects.BUCKET_FLOATING_IPS, FloatingIP)
        self.networks: Bucket[NetworkAttachment] = store.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment)

    async def _get(self, address: str) -> tuple[FloatingIP, int]:
        netcheck.host_address(address, "address")
        entry = await self.bucket.get(floating_ip_key(address))
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"floating IP {address} does not exist; create it first")
        return entry.value, entry.revision

    async def create(self, body: bytes) -> FloatingIP:
        req = decode_request(body, FloatingIPRequest)
        if not req.network:
            raise ApiError(Code.INVALID, "a floating IP needs --network", "network")
        check_name(req.network, "network", "network name")
        address = netcheck.host_address(req.address, "address")
        net = await self.networks.get(req.network)
        if net is None:
            raise ApiError(Code.NOT_FOUND, f"network {req.network!r} does not exist", "network")
        if net.value.subnet is None:
            raise ApiError(Code.INVALID, f"network {req.network} is layer 2 (no subnet): virtbus routes no "
                           "floating IP onto it", "network")
        subnet = IPv4Network(net.value.subnet)
        gateway = IPv4Address(net.value.gateway) if net.value.gateway else subnet.network_address + 1
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address, gateway):
            raise ApiError(Code.INVALID, f"{address} is not a usable address of {req.network} ({subnet})", "address")
        fip = FloatingIP(address=str(address), network=req.network)
        try:
            await self.bucket.create(fip.key, fip)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"floating IP {address} already exists", "address") from None
            raise
        return fip

    async def attach(self, body: bytes) -> FloatingIP:
        req = decode_request(body, FloatingIPRequest)
        if not req.vm:
            raise ApiError(Code.INVALID, "attach needs a VM", "vm")
        check_name(req.vm, "vm", "VM name")
        fip, rev = await self._get(req.address)
        await self.store.vms.require(req.vm, "VM")
        if fip.vm not in (None, req.vm):
            raise ApiError(Code.ALREADY_EXISTS, f"floating IP {fip.address} is attached to VM {fip.vm}", "address")
        _not_a_services(fip)
        attached = FloatingIP(address=fip.address, network=fip.network, vm=req.vm)
        await self.bucket.update(fip.key, attached, rev)
        return attached

    async def detach(self, body: bytes) -> Ack:
        fip, rev = await self._get(decode_request(body, FloatingIPRequest).address)
        _not_a_services(fip)
        await self.bucket.update(fip.key, FloatingIP(address=fip.address, network=fip.network), rev)
        return Ack(message=f"floating IP {fip.address} detached")

    async def delete(self, body: bytes) -> Ack:
        fip, rev = await self._get(decode_request(body, FloatingIPRequest).address)
        _not_a_services(fip)
        await self.bucket.delete(fip.key, rev)
        return Ack(message=f"floating IP {fip.address} deleted")

    async def detach_all(self, vm: str) -> None:
        for entry in await self.bucket.items():
            if entry.value.vm == vm:
                await self.bucket.update(entry.key, FloatingIP(address=entry.value.address,
                                                               network=entry.value.network), entry.revision)

    async def list(self, body: bytes) -> FloatingIPList:
        decode_request(body, ListRequest)
        return FloatingIPList(items=sorted((e.value for e in await self.bucket.items()),
                                           key=lambda f: IPv4Address(f.address)))


def _not_a_services(fip: FloatingIP) -> None:
    if fip.service is not None:
        raise ApiError(Code.CONFLICT, f"floating IP {fip.address} is the external address of LoadBalancer Service "
                       f"{fip.service}; delete the Service (or change its type) first", "address")
