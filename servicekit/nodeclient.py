"""A node's client of the control plane's node API (handler and launchers): register, report the
status of its VMIs, get their secondary addresses. A report is retried while the control plane or
the bus is away, so an outage delays it and loses nothing."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client

from proto import subjects
from proto.api import decode_reply, encode
from proto.errors import ApiError, Code
from proto.migrations import VERB_MIGRATION, MigrationReport, MigrationReportReply
from proto.nodeapi import (
    VERB_ATTACH,
    VERB_REGISTER,
    VERB_STATUS,
    AttachReply,
    AttachRequest,
    Registration,
    SecondaryNic,
    StatusReply,
    StatusReport,
)
from proto.snapshots import (
    VERB_SNAPSHOT_PROGRESS,
    VERB_VOLUME_PROGRESS,
    ProgressReply,
    SnapshotProgress,
    VolumeProgress,
)
from proto.state import Node

T = TypeVar("T")
log = structlog.get_logger()
TIMEOUT_S = 5.0  # how long a node waits for the control plane's answer before it asks again


class NodeApiClient:
    def __init__(self, nc: Client, node: str, *, timeout: float = TIMEOUT_S) -> None:
        self.nc = nc
        self.node = subjects.token(node)
        self.timeout = timeout

    async def _call(self, verb: str, body: msgspec.Struct, reply: type[T], patience: float) -> T:
        """One request; retried while nobody answers (the control plane or NATS is away) for up to
        ``patience`` seconds (< 0: forever). Errors the control plane returns are not retried
        unless they say so."""
        deadline = time.monotonic() + patience if patience >= 0 else None
        delay = 0.2
        while True:
            try:
                msg = await self.nc.request(subjects.nodeapi(self.node, verb), encode(body), timeout=self.timeout)
                return decode_reply(msg.data, reply)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError) as exc:
                error = ApiError(Code.UNAVAILABLE, f"the control plane did not answer {verb}: "
                                                   f"{type(exc).__name__}")
            except ApiError as exc:
                if not exc.retryable:
                    raise
                error = exc
            if deadline is not None and time.monotonic() + delay > deadline:
                raise error
            log.info("node api: retrying", verb=verb, error=error.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def register(self, registration: Registration, patience: float = -1) -> Node:
        return await self._call(VERB_REGISTER, registration, Node, patience)

    async def report(self, report: StatusReport, patience: float = -1) -> StatusReply:
        return await self._call(VERB_STATUS, report, StatusReply, patience)

    async def migration(self, report: MigrationReport, patience: float = 60.0) -> MigrationReportReply:
        return await self._call(VERB_MIGRATION, report, MigrationReportReply, patience)

    async def snapshot_progress(self, report: SnapshotProgress, patience: float = 30.0) -> ProgressReply:
        return await self._call(VERB_SNAPSHOT_PROGRESS, report, ProgressReply, patience)

    async def volume_progress(self, report: VolumeProgress, patience: float = 30.0) -> ProgressReply:
        return await self._call(VERB_VOLUME_PROGRESS, report, ProgressReply, patience)

    async def attach(self, vmi: str, uid: str, patience: float = 60.0) -> list[SecondaryNic]:
        return (await self._call(VERB_ATTACH, AttachRequest(vmi=vmi, uid=uid), AttachReply, patience)).items
