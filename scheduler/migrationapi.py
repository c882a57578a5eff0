"""VirtualMachineInstanceMigrations (``virtbus.api.migration.*``): ask that a running VMI move to
another node alive (``virtbus migrate``, KubeVirt's VirtualMachineInstanceMigration), see how they
went, and cancel one (``virtbus migrate-cancel``: its record deleted, as virtctl deletes it).

A migration is refused here, as KubeVirt's admission refuses it, when its instance cannot move
(proto.migrations.not_migratable) or already moves; the leader's controller (scheduler.migrations)
takes the rest from the record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from proto import migrations, subjects
from proto.api import Ack, ListRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from proto.migrations import FINAL, Migration, MigrationCreate, MigrationList, MigrationReply
from proto.workloads import generate_name
from servicekit.store import Bucket, Entry, Store


async def migration_bucket(store: Store) -> Bucket[Migration]:
    # the control plane's only: a node's connect neither needs nor waits for it
    return await store.control_bucket(subjects.BUCKET_MIGRATIONS, Migration)


class MigrationApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._bucket: Bucket[Migration] | None = None

    async def bucket(self) -> Bucket[Migration]:
        if self._bucket is None:
            self._bucket = await migration_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("migration", "create"): self.create, ("migration", "apply"): self.apply,
                ("migration", "get"): self.get, ("migration", "list"): self.list_all,
                ("migration", "delete"): self.delete, ("migration", "cancel"): self.cancel}

    async def create(self, body: bytes) -> MigrationReply:
        req = decode_request(body, MigrationCreate)
        return MigrationReply(item=await self._create(req.name or generate_name("kubevirt-migrate-vm"), req.vmi_name,
                                                      req.labels))

    async def apply(self, body: bytes) -> MigrationReply:
        """A VirtualMachineInstanceMigration manifest: made, or left as it is when it is there already
        (kubectl apply of the same file twice); its spec never changes."""
        obj = load_manifest(body, content_type="json")
        if not migrations.is_migration(obj) or not isinstance(obj, dict):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {migrations.KIND}", "kind")
        name, vmi, labels = migrations.parse(obj)
        found = await (await self.bucket()).get(name)
        if found is not None:
            if found.value.vmi_name != vmi:
                raise ApiError(Code.INVALID, f"migration {name} migrates VMI {found.value.vmi_name}: a migration's "
                                             "spec cannot change", "spec.vmiName")
            return MigrationReply(item=found.value)
        return MigrationReply(item=await self._create(name, vmi, labels))

    async def evacuate(self, vmi_name: str) -> Migration:
        """A drain's eviction of an instance that is to move alive (proto.migrations.eviction_way): its
        migration under way, else a new one (kubevirt-evacuation-<5 random>, as KubeVirt names them)."""
        waiting = await self._unfinished(vmi_name)
        return waiting.value if waiting is not None else await self._create(generate_name("kubevirt-evacuation"),
                                                                            vmi_name, {})

    async def _unfinished(self, vmi_name: str) -> Entry[Migration] | None:
        """The instance's migration that has not finished (one at most: a second is refused)."""
        return next((e for e in await (await self.bucket()).items()
                     if e.value.vmi_name == vmi_name and e.value.phase not in FINAL), None)

    async def _create(self, name: str, vmi_name: str, labels: dict[str, str]) -> Migration:
        migrations.check_name(name, "metadata.name")
        migrations.check_name(vmi_name, "spec.vmiName", "a VMI's name")
        vmi = await self.store.vmis.get(vmi_name)
        if vmi is None:
            raise ApiError(Code.NOT_FOUND, f"VMI {vmi_name} not found", "spec.vmiName")
        refused = migrations.refusal(vmi.value)
        if refused is not None:
            raise refused
        bucket = await self.bucket()
        waiting = await self._unfinished(vmi_name)
        if waiting is not None:
            raise ApiError(Code.CONFLICT, f"in-flight migration detected. Active migration job ({waiting.value.uid}) "
                                          f"is currently already in progress for VMI {vmi_name}.", "spec.vmiName")
        item = Migration(name=name, uid=str(uuid.uuid4()), vmi_name=vmi_name, created_at=self.clock(), labels=labels,
                         source_node=vmi.value.node_name)
        try:
            await bucket.create(name, item)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"migration {name} already exists", "metadata.name") from None
            raise
        return item

    async def get(self, body: bytes) -> MigrationReply:
        name = decode_request(body, NameRequest).name
        found = await (await self.bucket()).get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"migration {name!r} not found", "name")
        return MigrationReply(item=found.value)

    async def list_all(self, body: bytes) -> MigrationList:
        decode_request(body, ListRequest)
        items = [e.value for e in await (await self.bucket()).items()]
        return MigrationList(items=sorted(items, key=lambda m: (m.created_at, m.name)))

    async def delete(self, body: bytes) -> Ack:
        """Its record goes; a migration under way is cancelled by that (scheduler.migrations)."""
        name = decode_request(body, NameRequest).name
        bucket = await self.bucket()
        found = await bucket.get(name)
        if found is None:
            raise ApiError(Code.NOT_FOUND, f"migration {name!r} not found", "name")
        await bucket.delete(name)
        running = found.value.phase not in FINAL
        return Ack(message=f"migration {name} deleted" + ("; the migration under way is cancelled" if running else ""))

    async def cancel(self, body: bytes) -> Ack:
        """virtctl migrate-cancel VM: the instance's migration under way, deleted."""
        vmi = decode_request(body, NameRequest).name
        waiting = await self._unfinished(vmi)
        if waiting is None:
            raise ApiError(Code.NOT_FOUND, f"Found no migration to cancel for {vmi}", "name")
        await (await self.bucket()).delete(waiting.key)
        return Ack(message=f"VM {vmi} was scheduled to migrate-cancel (migration {waiting.key})")
