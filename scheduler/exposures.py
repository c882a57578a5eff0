"""Node ports, the api side: each (protocol, node port) is a KV key claimed by create, so no two
VMs can hold one; the VM's node turns them into DNAT rules (handler/nodeports.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from proto import netcheck, subjects
from proto.api import Ack, ExposeRequest, ExposureList, ListRequest, UnexposeRequest, decode_request
from proto.errors import ApiError, Code
from proto.events import Event
from proto.state import Exposure, exposure_key
from proto.validation import check_name
from servicekit.store import Bucket, Store

NODE_PORT_RANGE = netcheck.NODE_PORT_RANGE


class ExposureApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.bucket: Bucket[Exposure] = store.bucket(subjects.BUCKET_EXPOSURES, Exposure)

    async def of_vm(self, vm: str) -> list[Exposure]:
        return [e.value for e in await self.bucket.items() if e.value.vm == vm]

    async def expose(self, body: bytes) -> Exposure:
        req = decode_request(body, ExposeRequest)
        check_name(req.name, "name")
        netcheck.protocol(req.protocol, "protocol")
        netcheck.port(req.port, "port")
        if req.node_port is not None:
            netcheck.node_port(req.node_port, "nodePort")
        await self.store.vms.require(req.name, "VM")
        for e in await self.of_vm(req.name):
            if (e.port, e.protocol) == (req.port, req.protocol):
                raise ApiError(Code.ALREADY_EXISTS, f"{req.protocol} port {req.port} of VM {req.name} is already "
                               f"exposed on node port {e.node_port}", "port")
        candidates = [req.node_port] if req.node_port is not None else list(NODE_PORT_RANGE)
        for node_port in candidates:
            exposure = Exposure(vm=req.name, port=req.port, node_port=node_port, protocol=req.protocol,
                                created_at=self.clock())
            try:
                await self.bucket.create(exposure.key, exposure)
                await self.store.emit(Event(kind="VirtualMachine", name=req.name, reason="Exposed",
                                            message=f"{req.protocol} port {req.port} on node port {node_port}",
                                            timestamp=self.clock()))
                return exposure
            except ApiError as exc:
                if exc.code is not Code.ALREADY_EXISTS:
                    raise
                if req.node_port is not None:
                    holder = await self.bucket.get(exposure_key(req.protocol, node_port))
                    who = f" by VM {holder.value.vm} port {holder.value.port}" if holder else ""
                    raise ApiError(Code.ALREADY_EXISTS, f"node port {node_port} is already exposed{who}",
                                   "nodePort") from None
        raise ApiError(Code.UNAVAILABLE, "every node port is taken")

    async def unexpose(self, body: bytes) -> Ack:
        req = decode_request(body, UnexposeRequest)
        check_name(req.name, "name")
        netcheck.protocol(req.protocol, "protocol")
        netcheck.port(req.port, "port")
        gone = [e for e in await self.of_vm(req.name) if (e.port, e.protocol) == (req.port, req.protocol)]
        if not gone:
            raise ApiError(Code.NOT_FOUND, f"{req.protocol} port {req.port} of VM {req.name} is not exposed")
        for e in gone:
            await self.bucket.delete(e.key)
        return Ack(message=f"VM {req.name} port {req.port} is no longer exposed")

    async def remove_all(self, vm: str) -> None:
        for e in await self.of_vm(vm):
            await self.bucket.delete(e.key)

    async def list(self, body: bytes) -> ExposureList:
        decode_request(body, ListRequest)
        return ExposureList(items=sorted((e.value for e in await self.bucket.items()), key=lambda e: e.node_port))
