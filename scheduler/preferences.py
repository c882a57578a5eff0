"""Preferences (``virtbus.api.preference.*``): virtbus's common set and the user's own, and their
application to a VM manifest that names one (proto.preferences)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proto import preferences, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from proto.preferences import COMMON, Preference, PreferenceList, PreferenceReply
from servicekit.store import Bucket, Store


class PreferenceApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bucket: Bucket[Preference] | None = None

    async def bucket(self) -> Bucket[Preference]:
        # the control plane's only: a node's connect neither needs nor waits for it
        if self._bucket is None:
            self._bucket = await self.store.control_bucket(subjects.BUCKET_PREFERENCES, Preference)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("preference", "apply"): self.apply, ("preference", "get"): self.get,
                ("preference", "list"): self.list_all, ("preference", "delete"): self.delete}

    async def lookup_all(self) -> dict[str, Preference]:
        return {**{e.key: e.value for e in await (await self.bucket()).items()}, **COMMON}

    async def expand(self, manifest: object) -> object:
        """A VM manifest with its preference applied (before it is parsed)."""
        if not (isinstance(manifest, dict) and isinstance(manifest.get("spec"), dict)
                and "preference" in manifest["spec"]):
            return manifest
        return preferences.expand(manifest, (await self.lookup_all()).get)

    async def apply(self, body: bytes) -> PreferenceReply:
        obj = load_manifest(body, content_type="json")
        if not preferences.is_preference(obj) or not isinstance(obj, dict):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {' or '.join(preferences.KINDS)}", "kind")
        item = preferences.parse(obj)
        await (await self.bucket()).put(item.name, item)
        return PreferenceReply(item=item)

    async def get(self, body: bytes) -> PreferenceReply:
        name = decode_request(body, NameRequest).name
        found = (await self.lookup_all()).get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"preference {name!r} not found", "name")
        return PreferenceReply(item=found)

    async def list_all(self, body: bytes) -> PreferenceList:
        decode_request(body, ListRequest)
        return PreferenceList(items=sorted((await self.lookup_all()).values(), key=lambda p: (not p.common, p.name)))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        if name in COMMON:
            raise ApiError(Code.INVALID, f"{name} is one of virtbus's common preferences", "name")
        bucket = await self.bucket()
        if await bucket.get(name) is None:
            raise ApiError(Code.NOT_FOUND, f"preference {name!r} not found", "name")
        await bucket.delete(name)
        return Ack(message=f"preference {name} deleted; VMs applied with it keep what it filled in")
