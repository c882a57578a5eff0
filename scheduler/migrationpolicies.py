"""MigrationPolicies (``virtbus.api.migrationpolicy.*``, proto.migrationpolicies): apply, get, list and
delete; and the migration controller's view of them, one watch of their bucket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proto import migrationpolicies, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from proto.migrationpolicies import MigrationPolicy, MigrationPolicyList, MigrationPolicyReply
from servicekit import informer
from servicekit.store import Bucket, Store


async def policy_bucket(store: Store) -> Bucket[MigrationPolicy]:
    # the control plane's only: a node's connect neither needs nor waits for it
    return await store.control_bucket(subjects.BUCKET_MIGRATION_POLICIES, MigrationPolicy)


class MigrationPolicyApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bucket: Bucket[MigrationPolicy] | None = None

    async def bucket(self) -> Bucket[MigrationPolicy]:
        if self._bucket is None:
            self._bucket = await policy_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("migrationpolicy", "apply"): self.apply, ("migrationpolicy", "get"): self.get,
                ("migrationpolicy", "list"): self.list_all, ("migrationpolicy", "delete"): self.delete}

    async def apply(self, body: bytes) -> MigrationPolicyReply:
        obj = load_manifest(body, content_type="json")
        if not migrationpolicies.is_migration_policy(obj) or not isinstance(obj, dict):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {migrationpolicies.KIND}", "kind")
        item = migrationpolicies.parse(obj)
        await (await self.bucket()).put(item.name, item)  # a whole object, as kubectl apply replaces it
        return MigrationPolicyReply(item=item)

    async def get(self, body: bytes) -> MigrationPolicyReply:
        name = decode_request(body, NameRequest).name
        found = await (await self.bucket()).get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"migrationpolicy {name!r} not found", "name")
        return MigrationPolicyReply(item=found.value)

    async def list_all(self, body: bytes) -> MigrationPolicyList:
        decode_request(body, ListRequest)
        items = [e.value for e in await (await self.bucket()).items()]
        return MigrationPolicyList(items=sorted(items, key=lambda p: p.name))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        bucket = await self.bucket()
        if await bucket.get(name) is None:
            raise ApiError(Code.NOT_FOUND, f"migrationpolicy {name!r} not found", "name")
        await bucket.delete(name)
        return Ack(message=f"migrationpolicy {name} deleted; migrations under way keep its settings")


async def watched(store: Store) -> informer.Informer[MigrationPolicy]:
    """The policies as the process's one watch of their bucket brings them, once it has them all."""
    watch = informer.shared(store, await policy_bucket(store))
    await watch.items()
    return watch
