"""The migration controller (the leader's): takes each VirtualMachineInstanceMigration through its
phases, one step at a time as scheduler.migrationplan decides, each one CAS write.

It starts a migration on its instance's record, has the binder choose and hold its target node,
fails one whose target does not get ready in time, turns a deleted record into a cancel, and keeps
each record's phase as its instance's. The nodes do the rest (proto.migrations.apply_report).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import msgspec
import structlog

from proto.clusterconfig import MigrationsConfig
from proto.errors import ApiError, Code
from proto.events import Event
from proto.migrationpolicies import MigrationPolicy
from proto.migrationpolicies import matching as choose_policy
from proto.migrations import FINAL, Migration
from proto.resources import vmi_labels
from proto.state import FINAL_PHASES, VMI, MigrationPhase, MigrationState
from scheduler import migrationplan, migrationpolicies
from scheduler.binder import Binder
from scheduler.eventsink import EventSink
from scheduler.migrationapi import migration_bucket
from scheduler.migrationplan import Act, Step
from scheduler.networkneeds import network_needs
from scheduler.vmicache import VmiCache
from servicekit import informer
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Bucket, Entry, Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
RESYNC_S = 5.0  # timeouts are judged at least this often


class Migrations:
    def __init__(self, store: Store, vmis: VmiCache, binder: Binder, events: EventSink, *,
                 clock: Callable[[], float] = time.time,
                 config: Callable[[], MigrationsConfig] = MigrationsConfig) -> None:
        self.store = store
        self.config = config  # the KubeVirt CR's spec.configuration.migrations, as it is now
        self.vmis = vmis
        self.binder = binder
        self.events = events
        self.clock = clock
        self.items: dict[str, Entry[Migration]] = {}  # the records, as the watch brought them
        # the unfinished ones by their VMI's name: what a VMI's change may move on (not every record: the
        # finished ones are kept, five per VMI, and every VMI change of a burst of binds comes here)
        self.unfinished: dict[str, set[str]] = {}
        self.queue = WorkQueue(self.reconcile, bind=("migration",))
        self._bucket: Bucket[Migration] | None = None
        self._starting = asyncio.Lock()  # one start decided at a time: each counts the ones before it
        self._policies: informer.Informer[MigrationPolicy] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._after_older: set[str] = set()  # told to wait for an older one: looked at again once one starts
        vmis.listen(self._vmi_changed)

    async def start(self) -> None:
        self._bucket = await migration_bucket(self.store)
        self._policies = await migrationpolicies.watched(self.store)
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._resync())]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self.queue.close()

    def _vmi_changed(self, name: str, vmi: VMI | None) -> None:
        if vmi is not None and vmi.migration_state is not None:
            self.queue.kick(vmi.migration_state.migration_name)
            if vmi.migration_state.final or vmi.phase in FINAL_PHASES:  # room for one that waits
                for held in self.unfinished.values():
                    for other in held:
                        self.queue.kick(other)
        for waiting in self.unfinished.get(name, ()):  # one waiting to start, or whose instance went
            self.queue.kick(waiting)

    async def _watch(self) -> None:
        assert self._bucket is not None
        while True:
            try:
                async for change in self._bucket.watch():
                    if change.value is None:
                        self._note(change.key, None)
                        await self._cancelled(change.key)
                    else:
                        self._note(change.key, Entry(change.key, change.value, change.revision))
                        self.queue.kick(change.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - watched again; the resync covers the gap
                log.warning("migration watch interrupted", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)

    def _note(self, name: str, entry: Entry[Migration] | None) -> None:
        old = self.items.pop(name, None)
        if old is not None:
            names = self.unfinished.get(old.value.vmi_name, set())
            names.discard(name)
            if not names:
                self.unfinished.pop(old.value.vmi_name, None)
        if entry is not None:
            self.items[name] = entry
            if entry.value.phase not in FINAL:
                self.unfinished.setdefault(entry.value.vmi_name, set()).add(name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            for name, entry in list(self.items.items()):
                if entry.value.phase not in FINAL:
                    self.queue.kick(name)

    async def _cancelled(self, name: str) -> None:
        vmi = next((v for v in self.vmis.values() if v.migration_state is not None
                    and v.migration_state.migration_name == name), None)
        if vmi is not None:
            await self._carry_out(migrationplan.cancelled(vmi, name), None, vmi)

    async def reconcile(self, name: str) -> None:
        record = self.items.get(name)
        if record is None:
            return
        entry = self.vmis.entries.get(record.value.vmi_name)
        vmi = entry.value if entry is not None else None
        await self._carry_out(migrationplan.plan(record.value, vmi, self.clock(), self._wait(vmi, record.value)),
                              record.value, vmi)

    def _under_way(self) -> list[MigrationState]:
        """The migrations under way, from the instances of the unfinished records (a few, not every VMI)."""
        out = []
        for name in self.unfinished:
            entry = self.vmis.entries.get(name)
            state = entry.value.migration_state if entry is not None else None
            if state is not None and not state.final and entry is not None and entry.value.phase not in FINAL_PHASES:
                out.append(state)
        return out

    def _startable(self, now: float) -> list[tuple[Migration, str | None]]:
        """The Pending migrations that would start but for the limits, with the node each would leave."""
        out = []
        for vmi_name, names in self.unfinished.items():
            entry = self.vmis.entries.get(vmi_name)
            vmi = entry.value if entry is not None else None
            for name in names:
                record = self.items.get(name)
                if vmi is not None and record is not None and \
                        migrationplan.plan(record.value, vmi, now).step is Step.START:
                    out.append((record.value, vmi.node_name))
        return out

    def _wait(self, vmi: VMI | None, item: Migration) -> str | None:
        if vmi is None or vmi.migration_state is not None and not vmi.migration_state.final:
            return None  # its own is under way (or it is gone): no start to hold back
        under_way, config = self._under_way(), self.config()
        why = migrationplan.must_wait(under_way, vmi.node_name, config)
        if why is not None:
            return why
        others = [s for s in self._startable(self.clock()) if s[0].name != item.name]
        older = migrationplan.older_first(item, others, under_way, config)
        if older is None:
            return None
        self.queue.kick(older.name)  # it takes the room now
        self._after_older.add(item.name)
        return migrationplan.older_first_reason(older)

    async def _carry_out(self, act: Act, item: Migration | None, vmi: VMI | None) -> None:
        match act.step:
            case Step.START if item is not None and vmi is not None:
                await self._start(item, vmi)
            case Step.PLACE if vmi is not None:
                await self._place(vmi)
            case Step.FAIL if vmi is not None and vmi.migration_state is not None:
                await self._fail(vmi.name, vmi.migration_state.migration_uid, act.reason)
            case Step.ABORT if vmi is not None and vmi.migration_state is not None:
                uid = vmi.migration_state.migration_uid
                await self._on_vmi(vmi.name, uid, lambda s: msgspec.structs.replace(s, abort_requested=True))
                log.info("migration abort asked", vmi=vmi.name, migration=vmi.migration_state.migration_name)
            case Step.MIRROR if item is not None and act.phase is not None:
                await self._mirror(item, act.phase, act.reason, vmi)

    async def _start(self, item: Migration, vmi: VMI) -> None:
        async with self._starting:
            now = self.clock()
            wait = self._wait(self.vmis.entries[vmi.name].value if vmi.name in self.vmis.entries else None, item)
            config = self.config()
            policies = [e.value for e in self._policies.entries.values()] if self._policies is not None else []
            policy = choose_policy(policies, vmi_labels(vmi))

            def start(current: VMI) -> VMI | None:
                if migrationplan.plan(item, current, now, wait).step is not Step.START:
                    return None  # it changed meanwhile, or another started first: the next pass decides
                return msgspec.structs.replace(current, migration_state=migrationplan.started(
                    current, item, now, config, policy))

            entry = await self.store.vmis.mutate(vmi.name, start)
            if entry is not None:  # counted by the next start at once, not once the watch brings it
                self.vmis.wrote(vmi.name, entry.value, entry.revision)
                if wait is None:  # those held for an older one to start first may have room left now
                    for other in self._after_older - {item.name}:
                        self.queue.kick(other)
                    self._after_older.clear()
            if wait is not None:
                self.queue.kick(item.name)  # said it waits: mirrored on its record

    async def _place(self, vmi: VMI) -> None:
        """The binder's choice of a target, written by CAS on the instance as the cache holds it."""
        entry = self.vmis.entries.get(vmi.name)
        if entry is None or entry.value.migration_state is None:
            return
        state = entry.value.migration_state
        needs = await network_needs(self.store, entry.value.spec)  # the host bridges its secondary networks are on
        entry = self.vmis.entries.get(vmi.name)  # as it is now: the lookup awaited
        if entry is None or entry.value.migration_state != state:
            self.queue.kick(state.migration_name)
            return
        assumption, message = self.binder.place_target(entry.value, needs)
        if assumption is None:
            await self._fail(vmi.name, state.migration_uid, f"no node can take it: {message}")
            return
        new = msgspec.structs.replace(entry.value, migration_state=msgspec.structs.replace(
            state, phase=MigrationPhase.SCHEDULED, target_node=assumption.node))
        try:
            revision = await self.store.vmis.update(vmi.name, new, entry.revision)
        except BaseException as exc:
            self.binder.forget_target(vmi.name, assumption)
            if isinstance(exc, ApiError) and exc.code is Code.CONFLICT:
                self.queue.kick(state.migration_name)  # changed meanwhile: decided again on what it is now
                return
            raise
        self.vmis.wrote(vmi.name, new, revision)
        log.info("migration target chosen", vmi=vmi.name, node=assumption.node, reason=message)

    async def _fail(self, vmi: str, uid: str, reason: str) -> None:
        now = self.clock()
        await self._on_vmi(vmi, uid, lambda s: msgspec.structs.replace(
            s, phase=MigrationPhase.FAILED, reason=reason, end_timestamp=now, target=None))
        log.info("migration failed", vmi=vmi, reason=reason)
        self.events.record(Event(kind="VirtualMachineInstance", name=vmi, reason="MigrationFailed",
                                 message=reason[:1000], timestamp=now, type="Warning"))

    async def _on_vmi(self, name: str, uid: str, change: Callable[[MigrationState], MigrationState]) -> None:
        def apply(vmi: VMI) -> VMI | None:
            state = vmi.migration_state
            if state is None or state.migration_uid != uid or state.final:
                return None
            return msgspec.structs.replace(vmi, migration_state=change(state))

        entry = await self.store.vmis.mutate(name, apply)
        if entry is not None:
            self.vmis.wrote(name, entry.value, entry.revision)

    async def _mirror(self, item: Migration, phase: MigrationPhase, reason: str, vmi: VMI | None) -> None:
        assert self._bucket is not None
        state = vmi.migration_state if vmi is not None else None
        mine = state if state is not None and state.migration_uid == item.uid else None  # its instance's word
        now = self.clock()
        finished = ((mine.end_timestamp if mine is not None else None) or now) if phase in FINAL else None
        new = msgspec.structs.replace(
            item, phase=phase, reason=reason, finished_at=finished,
            source_node=mine.source_node if mine is not None else item.source_node,
            target_node=mine.target_node if mine is not None else item.target_node)
        record = self.items.get(item.name)
        if new == item or record is None:
            return
        try:  # by CAS: a record deleted meanwhile (cancelled) is not made again
            revision = await self._bucket.update(item.name, new, record.revision)
        except ApiError as exc:
            if exc.code in (Code.CONFLICT, Code.NOT_FOUND):
                return  # the watch brings what it is now, and the next pass
            raise
        self._note(item.name, Entry(item.name, new, revision))
        if phase in FINAL and mine is None:  # refused as it started: said on the instance too
            self.events.record(Event(kind="VirtualMachineInstance", name=item.vmi_name, reason="MigrationFailed",
                                     message=f"migration {item.name}: {reason}"[:1000], timestamp=now,
                                     type="Warning"))
        if phase in FINAL:
            await self._drop_old(item.vmi_name)

    async def _drop_old(self, vmi: str) -> None:
        assert self._bucket is not None
        for name in migrationplan.finished_to_drop([e.value for e in self.items.values()], vmi):
            with contextlib.suppress(ApiError):
                await self._bucket.delete(name)
            self._note(name, None)

