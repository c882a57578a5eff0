"""A launcher's part in its instance's live migration (proto.migrations), on either side.

- ``Target``: the launcher its target node started. Once it has made the disks, the NICs and its
  libvirtd as any launch does, it listens (launcher.migrationproxy), says so (its token only to the
  source node, launcher.migrationtoken), and waits: for the guest
  to arrive and the instance to be bound here (then it runs it as its own), or for the migration to
  fail (then it cleans up and leaves).
- ``Source``: the launcher running the guest. When its instance's migration has a ready target, it
  asks the target for its token, says it starts, moves the guest (launcher.migration) and says how
  that went: moved, it ends without touching the guest, now the target's; failed, the guest runs on
  here as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client

from launcher import migration, migrationtls, migrationtoken
from launcher.migrationproxy import LIBVIRT, MIGRATION_DIR, SOURCE_SOCKETS, SourceProxies, TargetListener, new_token
from proto.errors import ApiError
from proto.migrations import MigrationReport, in_flight
from proto.state import VMI, MigrationOptions, MigrationPhase, MigrationState, VMIInterface
from servicekit.nodeclient import NodeApiClient

log = structlog.get_logger()
REPORT_PATIENCE_S = -1.0  # a migration's end must be said: the other side waits on it
LIBVIRTD_SOCKET = Path("/run/libvirt/libvirt-sock")


class MigrationOver(Exception):
    """The migration ended before the guest arrived (failed, cancelled, or the instance went)."""


class Target:
    def __init__(self, nc: Client, nodeapi: NodeApiClient, *, vmi: str, uid: str, node: str, node_dir: Path,
                 migration_uid: str, node_netns: str | None) -> None:
        self.nc = nc
        self.nodeapi = nodeapi
        self.node_netns = node_netns  # where its node's address is: the listener's namespace
        self.vmi = vmi
        self.uid = uid
        self.node = node
        self.node_dir = node_dir
        self.migration_uid = migration_uid
        self.source_node: str | None = None  # the node the guest comes from, as its record says
        self.options = MigrationOptions()  # the cluster's settings it runs with, as its record says
        self.identity: migrationtls.Identity | None = None
        self.arrived = asyncio.Event()  # the instance is bound here: the guest is ours
        self.over = asyncio.Event()  # the migration ended otherwise
        self.resumed = asyncio.Event()  # libvirt resumed the guest here: the move is done
        self.why = ""
        self.closing: asyncio.Task[None] | None = None  # the listener's last connections, ending

    def domain_event(self, event: str, detail: str) -> None:
        """The target's libvirtd's lifecycle events (launcher.supervision's listener)."""
        if (event, detail) == ("RESUMED", "MIGRATED"):
            self.resumed.set()

    def heard(self, vmi: VMI | None) -> None:
        """Each change of its instance, while it waits."""
        if vmi is not None and vmi.uid == self.uid and vmi.node_name == self.node:
            self.arrived.set()
            return
        state = in_flight(vmi)
        if state is None or state.migration_uid != self.migration_uid or state.target_node != self.node:
            self.why = vmi.migration_state.reason if vmi is not None and vmi.migration_state else "instance gone"
            self.over.set()
            return
        self.source_node = state.source_node
        self.options = state.options

    async def prepare(self) -> None:
        """Before the launch reaps orphans (openssl is a child of ours): the TLS identity, unless the
        cluster says its migrations go in the clear. Raises ApiError."""
        if not self.options.disable_tls:
            self.identity = await asyncio.to_thread(migrationtls.make_identity, MIGRATION_DIR)

    async def receive(self, interfaces: list[VMIInterface], find: Callable[[], Any]) -> Any:
        """Listen, say the target is ready, wait; returns the domain once it is ours (``find`` looks
        it up). Raises MigrationOver."""
        MIGRATION_DIR.mkdir(parents=True, exist_ok=True)
        token = new_token()
        # the channels end where this launcher's libvirtd and the QEMU it starts listen: the same
        # paths the source's sockets have, in this launcher's own /run/libvirt
        listener = TargetListener(token, {**SOURCE_SOCKETS, LIBVIRT: LIBVIRTD_SOCKET},
                                  tls=self.identity.context if self.identity is not None else None)
        port = await listener.start(self.node_netns)
        desk = migrationtoken.TokenDesk(self.nc, node=self.node, vmi=self.vmi, migration_uid=self.migration_uid,
                                        token=token, source_node=lambda: self.source_node,
                                        certificate=self.identity.certificate if self.identity is not None else "")
        try:
            await desk.open()
            reply = await self.nodeapi.migration(MigrationReport(
                vmi=self.vmi, uid=self.uid, migration_uid=self.migration_uid, phase=MigrationPhase.TARGET_READY,
                port=port, node_dir=str(self.node_dir), interfaces=interfaces))
            if reply.phase is not MigrationPhase.TARGET_READY:
                raise MigrationOver(f"the migration is {reply.phase.value}")
            log.info("migration target ready", port=port, tls=self.identity is not None)
            if await self._first(self.arrived, self.over, self.resumed) is self.resumed:
                # The guest runs here: said from this side too, so that the move is known even if its
                # source ends before it says so (its node would otherwise take the instance for lost).
                said = await self.nodeapi.migration(MigrationReport(
                    vmi=self.vmi, uid=self.uid, migration_uid=self.migration_uid, phase=MigrationPhase.SUCCEEDED),
                    patience=REPORT_PATIENCE_S)
                log.info("the guest runs here", migration=said.phase.value)
                await self._first(self.arrived, self.over)
            if not self.arrived.is_set():
                raise MigrationOver(self.why or "the migration ended")
        finally:
            await desk.close()
            if desk.refused:
                log.warning("requests for the token not from the source were refused", count=desk.refused)
            if listener.refused:
                log.warning("connections without the token were refused", count=listener.refused)
            # the source's connections end by themselves, meanwhile: its libvirtd confirms the move over them
            listener.stop_accepting()
            self.closing = asyncio.create_task(listener.close())
        return await asyncio.to_thread(find)

    @staticmethod
    async def _first(*events: asyncio.Event) -> asyncio.Event:
        """The first of the events to be set (one set already: that one)."""
        waits = {asyncio.create_task(e.wait()): e for e in events}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return next(e for e in events if e.is_set())

    async def failed(self, reason: str) -> None:
        """This side could not get ready: the migration fails (the guest runs on at its source)."""
        try:
            await self.nodeapi.migration(MigrationReport(vmi=self.vmi, uid=self.uid, migration_uid=self.migration_uid,
                                                         phase=MigrationPhase.FAILED, reason=reason[:1000]))
        except ApiError as exc:
            log.info("migration failure not reported", error=exc.message)


class Source:
    def __init__(self, nc: Client, nodeapi: NodeApiClient, *, vmi: str, uid: str, node: str, node_dir: Path,
                 domain: Callable[[], Any], memory: int, node_netns: str | None,
                 hold: Callable[[bool], None] = lambda moving: None) -> None:
        """hold: told True as the guest starts to move, False if it did not (launcher.power holds still)."""
        self.nc = nc
        self.nodeapi = nodeapi
        self.hold = hold
        self.node_netns = node_netns
        self.vmi = vmi
        self.uid = uid
        self.node = node
        self.node_dir = node_dir
        self.domain = domain  # the running domain, once it runs
        self.memory = memory
        self.moved = asyncio.Event()  # the guest runs on the target now
        self.abort = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._started: set[str] = set()  # migrations begun here, each once
        self._last: VMI | None = None

    def heard(self, vmi: VMI) -> None:
        self._last = vmi
        state = in_flight(vmi)
        if state is None or state.source_node != self.node or vmi.node_name != self.node:
            return
        if state.abort_requested or vmi.stop_requested:  # cancelled, or the guest is to stop: it stays
            self.abort.set()
            return
        if state.phase is MigrationPhase.TARGET_READY and state.migration_uid not in self._started \
                and self.domain() is not None and self.task is None:
            self._started.add(state.migration_uid)
            self.abort.clear()
            self.task = asyncio.create_task(self._run(state))

    async def _run(self, state: MigrationState) -> None:
        try:
            await self._move(state)
        finally:
            self.task = None
            if self._last is not None and not self.moved.is_set():
                self.heard(self._last)  # a next migration made ready while this one ended starts now

    async def _move(self, state: MigrationState) -> None:
        target = state.target
        assert target is not None and state.target_node is not None  # TargetReady says where
        tls = not state.options.disable_tls
        try:
            grant = await migrationtoken.ask(self.nc, target_node=state.target_node, vmi=self.vmi,
                                             migration_uid=state.migration_uid, tls=tls)
            context = migrationtls.client_context(grant.certificate) if tls else None
        except ApiError as exc:
            log.warning("migration not started: no token", reason=exc.message)
            await self._say(state, MigrationPhase.FAILED, exc.message)
            return
        reply = await self._say(state, MigrationPhase.RUNNING)
        if reply is not MigrationPhase.RUNNING:
            log.info("migration not started", phase=reply.value if reply else None)
            return
        log.info("migrating", target_node=state.target_node, migration=state.migration_name,
                 options=msgspec.to_builtins(state.options))
        started = asyncio.get_running_loop().time()
        self.hold(True)
        try:
            async with SourceProxies(target.address, target.port, grant.token, netns=self.node_netns, tls=context):
                await migration.send(self.domain(), str(self.node_dir), target.node_dir, self.memory, self.abort,
                                     state.options)
        except (migration.MigrationFailed, OSError) as exc:
            log.warning("migration failed; the guest runs on here", reason=str(exc))
            self.hold(False)
            await self._say(state, MigrationPhase.FAILED, str(exc) or type(exc).__name__)
            return
        self.moved.set()
        took = asyncio.get_running_loop().time() - started
        log.info("migrated", target_node=state.target_node, seconds=round(took, 2))
        await self._say(state, MigrationPhase.SUCCEEDED)

    async def _say(self, state: MigrationState, phase: MigrationPhase, reason: str = "") -> MigrationPhase | None:
        try:
            reply = await self.nodeapi.migration(MigrationReport(
                vmi=self.vmi, uid=self.uid, migration_uid=state.migration_uid, phase=phase, reason=reason[:1000]),
                patience=REPORT_PATIENCE_S)
        except ApiError as exc:
            log.warning("migration phase not reported", phase=phase.value, error=exc.message)
            return None
        return reply.phase

    async def settle(self) -> None:
        """The migration under way, waited for (its domain stopped: moved, or about to fail)."""
        task = self.task
        if task is not None:
            await asyncio.wait([task])
