"""Routes and Ingresses (``virtbus.api.route.*``, ``virtbus.api.ingress.*``), the api side: stored as
they were applied (after proto.routes's checks); every node's proxy serves them (handler.router).
A Service they name need not exist yet, as in Kubernetes: until it has endpoints, its host gets 503."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from proto import routes, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.events import Event
from proto.manifest import load_manifest
from proto.routes import Ingress, IngressList, IngressReply, Route, RouteList, RouteReply
from proto.validation import check_name
from servicekit.store import Bucket, Store

T = TypeVar("T", Route, Ingress)


class RouteApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.routes: Bucket[Route] = store.bucket(subjects.BUCKET_ROUTES, Route)
        self.ingresses: Bucket[Ingress] = store.bucket(subjects.BUCKET_INGRESSES, Ingress)

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Any]]:
        return {("route", "apply"): self.apply_route, ("route", "get"): self.get_route,
                ("route", "list"): self.list_routes, ("route", "delete"): self.delete_route,
                ("ingress", "apply"): self.apply_ingress, ("ingress", "get"): self.get_ingress,
                ("ingress", "list"): self.list_ingresses, ("ingress", "delete"): self.delete_ingress}

    async def _store(self, bucket: Bucket[T], wanted: T, kind: str) -> T:
        """Create, or replace keeping its uid and age; a CAS on the revision read (Conflict if it moved)."""
        existing = await bucket.get(wanted.name)
        if existing is None:
            await bucket.create(wanted.name, wanted)
        else:
            wanted = msgspec.structs.replace(wanted, uid=existing.value.uid, created_at=existing.value.created_at)
            await bucket.update(wanted.name, wanted, existing.revision)
        await self.store.emit(Event(kind=kind, name=wanted.name, reason="Applied" if existing else "Created",
                                    message=_describe(wanted), timestamp=self.clock()))
        return wanted

    async def apply_route(self, body: bytes) -> RouteReply:
        wanted = routes.parse_route(load_manifest(body, content_type="json"), uid=str(uuid.uuid4()), now=self.clock())
        return RouteReply(item=await self._store(self.routes, wanted, "Route"))

    async def apply_ingress(self, body: bytes) -> IngressReply:
        wanted = routes.parse_ingress(load_manifest(body, content_type="json"), uid=str(uuid.uuid4()),
                                      now=self.clock())
        return IngressReply(item=await self._store(self.ingresses, wanted, "Ingress"))

    async def get_route(self, body: bytes) -> RouteReply:
        return RouteReply(item=(await self.routes.require(_name(body), "Route")).value)

    async def get_ingress(self, body: bytes) -> IngressReply:
        return IngressReply(item=(await self.ingresses.require(_name(body), "Ingress")).value)

    async def list_routes(self, body: bytes) -> RouteList:
        decode_request(body, ListRequest)
        return RouteList(items=[e.value for e in sorted(await self.routes.items(), key=lambda e: e.key)])

    async def list_ingresses(self, body: bytes) -> IngressList:
        decode_request(body, ListRequest)
        return IngressList(items=[e.value for e in sorted(await self.ingresses.items(), key=lambda e: e.key)])

    async def delete_route(self, body: bytes) -> Ack:
        name = _name(body)
        entry = await self.routes.require(name, "Route")
        await self.routes.delete(name, entry.revision)
        return Ack(message=f"route/{name} deleted")

    async def delete_ingress(self, body: bytes) -> Ack:
        name = _name(body)
        entry = await self.ingresses.require(name, "Ingress")
        await self.ingresses.delete(name, entry.revision)
        return Ack(message=f"ingress/{name} deleted")


def _name(body: bytes) -> str:
    name = decode_request(body, NameRequest).name
    check_name(name, "name")
    return name


def _describe(obj: Route | Ingress) -> str:
    if isinstance(obj, Route):
        return f"{obj.host}{obj.path} -> " + ",".join(b.service for b in obj.backends)
    return ",".join(sorted({r.host or "*" for r in obj.rules})) or "*"
