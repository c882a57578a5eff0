"""Instancetypes (``virtbus.api.instancetype.*``): virtbus's common set and the user's own, and the
expansion of a VM manifest that names one (proto.instancetypes)."""

from __future__ import annotations

from proto import instancetypes, subjects
from proto.api import Ack, InstancetypeList, InstancetypeReply, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.instancetypes import COMMON, Instancetype
from proto.manifest import load_manifest
from servicekit.store import Bucket, Store


class InstancetypeApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bucket: Bucket[Instancetype] | None = None

    async def bucket(self) -> Bucket[Instancetype]:
        # the control plane's only: a node's connect neither needs nor waits for it
        if self._bucket is None:
            self._bucket = await self.store.control_bucket(subjects.BUCKET_INSTANCETYPES, Instancetype)
        return self._bucket

    async def lookup_all(self) -> dict[str, Instancetype]:
        return {**{e.key: e.value for e in await (await self.bucket()).items()}, **COMMON}

    async def expand(self, manifest: object) -> object:
        """A VM manifest with its instancetype's size written in (before it is parsed)."""
        if not (isinstance(manifest, dict) and isinstance(manifest.get("spec"), dict)
                and "instancetype" in manifest["spec"]):
            return manifest
        known = await self.lookup_all()
        return instancetypes.expand(manifest, known.get)

    async def apply(self, body: bytes) -> InstancetypeReply:
        obj = load_manifest(body, content_type="json")
        if not instancetypes.is_instancetype(obj) or not isinstance(obj, dict):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {' or '.join(instancetypes.KINDS)}", "kind")
        item = instancetypes.parse(obj)
        await (await self.bucket()).put(item.name, item)
        return InstancetypeReply(item=item)

    async def get(self, body: bytes) -> InstancetypeReply:
        name = decode_request(body, NameRequest).name
        found = (await self.lookup_all()).get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"instancetype {name!r} not found", "name")
        return InstancetypeReply(item=found)

    async def list_all(self, body: bytes) -> InstancetypeList:
        decode_request(body, ListRequest)
        return InstancetypeList(items=sorted((await self.lookup_all()).values(), key=lambda t: (not t.common, t.name)))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        if name in COMMON:
            raise ApiError(Code.INVALID, f"{name} is one of virtbus's common instancetypes", "name")
        bucket = await self.bucket()
        if await bucket.get(name) is None:
            raise ApiError(Code.NOT_FOUND, f"instancetype {name!r} not found", "name")
        await bucket.delete(name)
        return Ack(message=f"instancetype {name} deleted; VMs sized by it keep their size")
