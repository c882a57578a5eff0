"""PriorityClasses (``virtbus.api.priorityclass.*``, proto.priorities): the user's, beside Kubernetes' two
built-in ones; and the binder's view of them (``ClassView``), one watch of the bucket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from proto import priorities, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from proto.priorities import BUILTIN, Priority, PriorityClass, PriorityClassList, PriorityClassReply
from servicekit import informer
from servicekit.store import Bucket, Store


async def class_bucket(store: Store) -> Bucket[PriorityClass]:
    # the control plane's only: a node's connect neither needs nor waits for it
    return await store.control_bucket(subjects.BUCKET_PRIORITY_CLASSES, PriorityClass)


class PriorityClassApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bucket: Bucket[PriorityClass] | None = None

    async def bucket(self) -> Bucket[PriorityClass]:
        if self._bucket is None:
            self._bucket = await class_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("priorityclass", "apply"): self.apply, ("priorityclass", "get"): self.get,
                ("priorityclass", "list"): self.list_all, ("priorityclass", "delete"): self.delete}

    async def _stored(self) -> dict[str, PriorityClass]:
        return {e.key: e.value for e in await (await self.bucket()).items()}

    async def apply(self, body: bytes) -> PriorityClassReply:
        obj = load_manifest(body, content_type="json")
        if not priorities.is_priority_class(obj) or not isinstance(obj, dict):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {priorities.KIND}", "kind")
        item = priorities.parse(obj)
        stored = await self._stored()
        priorities.replaced(stored.get(item.name), item, stored)
        await (await self.bucket()).put(item.name, item)
        return PriorityClassReply(item=item)

    async def get(self, body: bytes) -> PriorityClassReply:
        name = decode_request(body, NameRequest).name
        found = BUILTIN.get(name) or (await self._stored()).get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"priorityclass {name!r} not found", "name")
        return PriorityClassReply(item=found)

    async def list_all(self, body: bytes) -> PriorityClassList:
        decode_request(body, ListRequest)
        every = {**await self._stored(), **BUILTIN}
        return PriorityClassList(items=sorted(every.values(), key=lambda c: c.name))

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        if name in BUILTIN:
            raise ApiError(Code.INVALID, f"{name} is one of Kubernetes' own priority classes", "name")
        bucket = await self.bucket()
        if await bucket.get(name) is None:
            raise ApiError(Code.NOT_FOUND, f"priorityclass {name!r} not found", "name")
        await bucket.delete(name)
        return Ack(message=f"priorityclass {name} deleted; instances bound with it keep their priority")


class ClassView(Protocol):
    """What the binder reads of the classes: an instance's priority by its class's name (or the global
    default's); raises ApiError(NOT_FOUND) for a class that does not exist."""

    def resolve(self, name: str | None) -> Priority: ...


class FixedClasses:
    """Classes that never change (the built-in ones, and those given): for a binder without a store."""

    def __init__(self, classes: Mapping[str, PriorityClass] | None = None) -> None:
        self.classes = dict(classes or {})

    def resolve(self, name: str | None) -> Priority:
        return priorities.resolve(name, self.classes)


class WatchedClasses:
    """The classes as the process's one watch of their bucket last brought them."""

    def __init__(self, watch: informer.Informer[PriorityClass]) -> None:
        self.watch = watch

    @classmethod
    async def of(cls, store: Store) -> WatchedClasses:
        """Once the watch has brought every class there is: a decision before that would find none."""
        watch = informer.shared(store, await class_bucket(store))
        await watch.items()
        return cls(watch)

    def resolve(self, name: str | None) -> Priority:
        return priorities.resolve(name, {k: e.value for k, e in self.watch.entries.items()})
