"""Services and Endpoints (``virtbus.api.service.*``, ``virtbus.api.endpoints.*``), the api side.

A Service's virtual IP is claimed as an ipam key (``svcip.<address>``) and each node port as an
exposures key, both by create: two Services never share an address, and a Service never takes a
node port a VM's ``expose`` holds. Claims are made before the Service is written and given back if
that fails, so a refused request leaves nothing behind; a Service's delete gives them back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import msgspec

from proto import netcheck, services, subjects
from proto.api import (
    Ack,
    EndpointsList,
    EndpointsReply,
    ListRequest,
    NameRequest,
    ServiceExpose,
    ServiceList,
    ServiceReply,
    ServiceView,
    decode_request,
)
from proto.errors import ApiError, Code
from proto.events import Event
from proto.labels import check_labels
from proto.manifest import load_manifest
from proto.state import (
    Endpoints,
    Exposure,
    FloatingIP,
    Service,
    ServicePort,
    ServiceType,
    exposure_key,
    floating_ip_key,
)
from proto.validation import check_name
from proto.workloads import ReplicaSet
from servicekit.store import Bucket, Store

NODE_PORTS = netcheck.NODE_PORT_RANGE


class ServiceApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.services: Bucket[Service] = store.bucket(subjects.BUCKET_SERVICES, Service)
        self.endpoints: Bucket[Endpoints] = store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints)
        self.claims: Bucket[str] = Bucket(store.raw[subjects.BUCKET_IPAM], str)
        self.ports: Bucket[Exposure] = store.bucket(subjects.BUCKET_EXPOSURES, Exposure)
        self.fips: Bucket[FloatingIP] = store.bucket(subjects.BUCKET_FLOATING_IPS, FloatingIP)

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Any]]:
        return {("service", "apply"): self.apply, ("service", "get"): self.get, ("service", "list"): self.list_all,
                ("service", "delete"): self.delete, ("vm", "expose-service"): self.expose,
                ("endpoints", "apply"): self.apply_endpoints, ("endpoints", "get"): self.get_endpoints,
                ("endpoints", "list"): self.list_endpoints, ("endpoints", "delete"): self.delete_endpoints}

    # --- Services ----------------------------------------------------------------------------------
    async def apply(self, body: bytes) -> ServiceReply:
        """Create a Service from a v1 manifest, or replace one: its address and node ports stay
        (they are immutable in Kubernetes too unless the manifest names others)."""
        wanted = services.parse_service(load_manifest(body, content_type="json"), uid=str(uuid.uuid4()),
                                        now=self.clock())
        return ServiceReply(item=await self._store(wanted))

    async def _store(self, wanted: Service) -> ServiceView:
        existing = await self.services.get(wanted.name)
        old = existing.value if existing else None
        if old is not None:
            if wanted.cluster_ip and wanted.cluster_ip != old.cluster_ip:
                raise ApiError(Code.INVALID, f"spec.clusterIP is immutable ({old.cluster_ip})", "spec.clusterIP")
            wanted = Service(name=wanted.name, uid=old.uid, type=wanted.type, ports=wanted.ports,
                             created_at=old.created_at, selector=wanted.selector, cluster_ip=old.cluster_ip,
                             labels=wanted.labels, load_balancer_ip=wanted.load_balancer_ip,
                             external_ips=wanted.external_ips)
        made: list[str] = []  # claims made by this request: given back if it fails
        try:
            if not wanted.cluster_ip:
                wanted = _with(wanted, cluster_ip=await self._claim_ip(wanted.name, "", made))
            elif old is None and not wanted.headless:
                await self._claim_ip(wanted.name, wanted.cluster_ip, made)
            ports = await self._claim_node_ports(wanted, old, made)
            wanted = _with(wanted, ports=ports, load_balancer_ip=await self._claim_fip(wanted, old, made))
            if existing is None:
                await self.services.create(wanted.name, wanted)
            else:
                await self.services.update(wanted.name, wanted, existing.revision)
        except BaseException:
            for key in made:
                if key.startswith("fip:"):
                    await self._release_fip(wanted.name, key.removeprefix("fip:"))
                else:
                    await (self.claims if key.startswith("svcip.") else self.ports).delete(key)
            raise
        if old is not None:
            await self._release_ports(old, keep=wanted)
            if old.load_balancer_ip and old.load_balancer_ip != wanted.load_balancer_ip:
                await self._release_fip(old.name, old.load_balancer_ip)
            if old.selector and not wanted.selector:  # its Endpoints become the user's to write
                await self.endpoints.delete(wanted.name)
        await self.store.emit(Event(kind="Service", name=wanted.name, reason="Applied" if old else "Created",
                                    message=f"{wanted.type} {wanted.cluster_ip}", timestamp=self.clock()))
        if wanted.type is ServiceType.LOAD_BALANCER and wanted.load_balancer_ip is None:
            await self.store.emit(Event(kind="Service", name=wanted.name, reason="NoFloatingIP", type="Warning",
                                        message="no free floating IP for its external address; create one with "
                                                "virtbus fip create ADDRESS --network NET and apply it again",
                                        timestamp=self.clock()))
        return await self._view(wanted)

    async def _claim_ip(self, name: str, wanted: str, made: list[str]) -> str:
        taken = {k.removeprefix("svcip.").replace("-", ".") for k in await self._claim_keys()}
        for _ in range(8):
            address = services.free_cluster_ip(taken, wanted)
            if address is None:
                raise ApiError(Code.ALREADY_EXISTS, f"cluster IP {wanted} is taken", "spec.clusterIP") if wanted \
                    else ApiError(Code.UNAVAILABLE, f"every address of {services.SERVICE_CIDR} is taken")
            key = subjects.ipam_service_ip(str(address))
            try:
                await self.claims.create(key, name)
            except ApiError as exc:
                if exc.code is not Code.ALREADY_EXISTS:
                    raise
                taken.add(str(address))  # another Service took it meanwhile
                continue
            made.append(key)
            return str(address)
        raise ApiError(Code.CONFLICT, "cluster IPs kept being taken; try again")

    async def _claim_keys(self) -> list[str]:
        # Filtered by the server: the ipam bucket also holds address tables, which are no str claims.
        # (nats-py's kv.keys() trusts a pending count that reads 0 while the keys are in flight, and
        # then finds none.)
        return [change.key async for change in self.claims.watch(subjects.IPAM_SERVICE_IPS, initial_only=True)
                if change.value is not None]

    async def _claim_node_ports(self, service: Service, old: Service | None, made: list[str]) -> list[ServicePort]:
        if service.type is ServiceType.CLUSTER_IP:
            return service.ports
        held = {(p.port, p.protocol): p.node_port for p in (old.ports if old else []) if p.node_port}
        out = []
        for i, p in enumerate(service.ports):
            keep = held.get((p.port, p.protocol))
            if p.node_port is None and keep is not None:
                out.append(_port_with(p, keep))
                continue
            if p.node_port is not None and p.node_port == keep:
                out.append(p)
                continue
            candidates = [p.node_port] if p.node_port is not None else list(NODE_PORTS)
            for node_port in candidates:
                claim = Exposure(vm="", service=service.name, port=p.port, node_port=node_port, protocol=p.protocol,
                                 created_at=self.clock())
                try:
                    await self.ports.create(claim.key, claim)
                except ApiError as exc:
                    if exc.code is not Code.ALREADY_EXISTS:
                        raise
                    if p.node_port is not None:
                        raise ApiError(Code.ALREADY_EXISTS, f"node port {node_port} is already taken",
                                       f"spec.ports[{i}].nodePort") from None
                    continue
                made.append(claim.key)
                out.append(_port_with(p, node_port))
                break
            else:
                raise ApiError(Code.UNAVAILABLE, "every node port is taken", f"spec.ports[{i}].nodePort")
        return out

    async def _claim_fip(self, service: Service, old: Service | None, made: list[str]) -> str | None:
        """A LoadBalancer's external address: a floating IP (MetalLB's pool, here), the one asked for
        or the lowest free one; None (pending, as Kubernetes shows it) when none is free."""
        if service.type is not ServiceType.LOAD_BALANCER:
            return None
        want = service.load_balancer_ip
        held = old.load_balancer_ip if old is not None else None
        if held is not None and want in (None, held):
            return held
        entries = sorted(await self.fips.items(), key=lambda e: IPv4Address(e.value.address))
        if want is not None:
            entries = [e for e in entries if e.value.address == want]
            if not entries:
                raise ApiError(Code.NOT_FOUND, f"floating IP {want} does not exist; create it with virtbus fip create",
                               "spec.loadBalancerIP")
        for entry in entries:
            holder = entry.value.vm or entry.value.service
            if holder is not None:
                if want is not None:
                    raise ApiError(Code.ALREADY_EXISTS, f"floating IP {want} is in use by {holder}",
                                   "spec.loadBalancerIP")
                continue
            try:
                await self.fips.update(entry.key, _with_fip(entry.value, service.name), entry.revision)
            except ApiError as exc:
                if exc.code is not Code.CONFLICT or want is not None:
                    raise
                continue  # taken meanwhile: the next one
            made.append(f"fip:{entry.value.address}")
            return entry.value.address
        return None

    async def _release_fip(self, service: str, address: str) -> None:
        def release(fip: FloatingIP) -> FloatingIP | None:
            return msgspec.structs.replace(fip, service=None) if fip.service == service else None
        await self.fips.mutate(floating_ip_key(address), release)

    async def _release_ports(self, old: Service, keep: Service | None = None) -> None:
        kept = {(p.node_port, p.protocol) for p in (keep.ports if keep else [])}
        for p in old.ports:
            if p.node_port is not None and (p.node_port, p.protocol) not in kept:
                key = exposure_key(p.protocol, p.node_port)
                claim = await self.ports.get(key)
                if claim is not None and claim.value.service == old.name:
                    await self.ports.delete(key, claim.revision)

    async def _view(self, service: Service) -> ServiceView:
        found = await self.endpoints.get(service.name)
        return ServiceView(service=service, endpoints=found.value if found else None)

    async def get(self, body: bytes) -> ServiceReply:
        name = decode_request(body, NameRequest).name
        check_name(name, "name")
        return ServiceReply(item=await self._view((await self.services.require(name, "Service")).value))

    async def list_all(self, body: bytes) -> ServiceList:
        decode_request(body, ListRequest)
        found = {e.key: e.value for e in await self.endpoints.items()}
        return ServiceList(items=[ServiceView(service=e.value, endpoints=found.get(e.key))
                                  for e in sorted(await self.services.items(), key=lambda e: e.key)])

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name")
        entry = await self.services.require(name, "Service")
        await self.services.delete(name, entry.revision)
        await self._release_ports(entry.value)
        if entry.value.load_balancer_ip:
            await self._release_fip(name, entry.value.load_balancer_ip)
        if not entry.value.headless:
            key = subjects.ipam_service_ip(entry.value.cluster_ip)
            claim = await self.claims.get(key)
            if claim is not None and claim.value == name:
                await self.claims.delete(key, claim.revision)
        # its Endpoints go with it, hand-written ones too, as Kubernetes' endpoints controller deletes them
        if await self.endpoints.get(name) is not None:
            await self.endpoints.delete(name)
        return Ack(message=f"service/{name} deleted")

    async def expose(self, body: bytes) -> ServiceReply:
        """virtctl expose: a Service selecting the VM's (or VMI's) instance by its labels."""
        req = decode_request(body, ServiceExpose)
        check_name(req.name, "name")
        if req.kind not in ("vm", "vmi", "vmirs"):
            raise ApiError(Code.INVALID, f"expose takes a vm, a vmi or a vmirs, not {req.kind!r}", "kind")
        selector = await self._selector_of(req.kind, req.name)
        port: dict[str, Any] = {"port": req.port, "protocol": req.protocol,
                                "targetPort": req.target_port if req.target_port is not None else req.port}
        if req.port_name:
            port["name"] = req.port_name
        manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": req.service_name},
                    "spec": {"type": req.type, "selector": selector, "ports": [port],
                             **({"clusterIP": req.cluster_ip} if req.cluster_ip else {}),
                             **({"externalIPs": [req.external_ip]} if req.external_ip else {}),
                             **({"loadBalancerIP": req.load_balancer_ip} if req.load_balancer_ip else {}),
                             **({"ipFamilies": [req.ip_family]} if req.ip_family else {}),
                             **({"ipFamilyPolicy": req.ip_family_policy} if req.ip_family_policy else {})}}
        try:
            wanted = services.parse_service(manifest, uid=str(uuid.uuid4()), now=self.clock())
        except ApiError as exc:  # name the flag, not a manifest the user never wrote
            raise ApiError(exc.code, exc.message, _flag(exc.field)) from None
        if await self.services.get(wanted.name) is not None:
            raise ApiError(Code.ALREADY_EXISTS, f"service {wanted.name!r} already exists", "serviceName")
        return ServiceReply(item=await self._store(wanted))

    async def _selector_of(self, kind: str, name: str) -> dict[str, str]:
        if kind == "vm":
            spec = (await self.store.vms.require(name, "VM")).value.spec
            # virtctl takes the template's labels; a VM without any is still found by the label
            # every instance of it carries
            selector = dict(spec.labels) or {services.VM_NAME_LABEL: name}
        elif kind == "vmirs":  # its instances carry its template's labels (virtctl takes them too)
            rs = (await (await self.store.control_bucket(subjects.BUCKET_REPLICASETS, ReplicaSet)).require(
                name, "VirtualMachineInstanceReplicaSet")).value
            selector = dict(rs.template.labels)
        else:
            vmi = (await self.store.vmis.require(name, "VMI")).value
            selector = services.pod_labels(vmi)
        if not selector:
            raise ApiError(Code.INVALID, f"{kind} {name} has no labels to select it by", "name")
        check_labels(selector, "selector")
        return selector

    # --- Endpoints -----------------------------------------------------------------------------------
    async def apply_endpoints(self, body: bytes) -> EndpointsReply:
        wanted = services.parse_endpoints(load_manifest(body, content_type="json"))
        service = await self.services.get(wanted.name)
        if service is not None and service.value.selector:
            raise ApiError(Code.INVALID, f"service {wanted.name} has a selector: virtbus keeps its Endpoints",
                           "metadata.name")
        await self.endpoints.put(wanted.name, wanted)
        return EndpointsReply(item=wanted)

    async def get_endpoints(self, body: bytes) -> EndpointsReply:
        name = decode_request(body, NameRequest).name
        check_name(name, "name")
        return EndpointsReply(item=(await self.endpoints.require(name, "Endpoints")).value)

    async def list_endpoints(self, body: bytes) -> EndpointsList:
        decode_request(body, ListRequest)
        return EndpointsList(items=[e.value for e in sorted(await self.endpoints.items(), key=lambda e: e.key)])

    async def delete_endpoints(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name")
        entry = await self.endpoints.require(name, "Endpoints")
        if not entry.value.manual:
            raise ApiError(Code.INVALID, f"virtbus keeps the Endpoints of service {name} from its selector; "
                           "delete the Service", "name")
        await self.endpoints.delete(name, entry.revision)
        return Ack(message=f"endpoints/{name} deleted")


def _with(service: Service, **changes: Any) -> Service:
    return msgspec.structs.replace(service, **changes)


def _with_fip(fip: FloatingIP, service: str) -> FloatingIP:
    return msgspec.structs.replace(fip, service=service)


def _port_with(port: ServicePort, node_port: int) -> ServicePort:
    return msgspec.structs.replace(port, node_port=node_port)


_FLAGS = {"metadata.name": "serviceName", "spec.type": "type", "spec.clusterIP": "clusterIp",
          "spec.externalIPs": "externalIp", "spec.externalIPs[0]": "externalIp",
          "spec.loadBalancerIP": "loadBalancerIp", "spec.ipFamilies": "ipFamily",
          "spec.ipFamilyPolicy": "ipFamilyPolicy"}


def _flag(field: str | None) -> str | None:
    if field is None:
        return None
    if field.startswith("spec.ports[0]."):
        return {"port": "port", "targetPort": "targetPort", "protocol": "protocol", "name": "portName"}.get(
            field.removeprefix("spec.ports[0]."), field)
    return _FLAGS.get(field, field)
