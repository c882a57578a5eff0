"""What a launcher says about its instance: phases, conditions, events, addresses and volumes, each a
report to its node's API (a node writes no VMI itself, proto.nodeapi), each with how long it waits
out an outage of the control plane or the bus and what it does when the instance is no longer ours.
"""

from __future__ import annotations

import asyncio

import structlog

from proto.errors import ApiError, Code
from proto.nodeapi import EventNote, NodeCondition, StatusReport, tidy
from proto.state import Phase, VMIInterface, VolumeStatus
from servicekit.nodeclient import NodeApiClient

log = structlog.get_logger()
# A phase waits out any outage of the control plane or the bus: the guest runs on meanwhile, and
# giving up would end a healthy VM (or lose how it ended).
REPORT_PATIENCE_S = -1.0
CONDITION_PATIENCE_S = 30.0  # a pause not said in time is said by the next change, or not at all
# A fenced launcher's end: the control plane fails the instance over by the lapsed lease anyway, so
# this report only helps, and must not keep a cut-off launcher (and its pod) around for long.
FENCED_PATIENCE_S = 10.0
_PHASE_EVENTS = {Phase.RUNNING: "Started", Phase.SUCCEEDED: "Stopped", Phase.FAILED: "Failed"}


class Reports:
    def __init__(self, nodeapi: NodeApiClient, *, vmi: str, uid: str, fenced: asyncio.Event) -> None:
        self.nodeapi = nodeapi
        self.vmi = vmi
        self.uid = uid
        self.fenced = fenced  # once set, the instance is the control plane's (the lease lapsed)

    async def phase(self, phase: Phase, reason: str = "", *, interfaces: list[VMIInterface] | None = None,
                    started_at: float | None = None, ready_at: float | None = None,
                    volumes: list[VolumeStatus] | None = None) -> None:
        """The instance's phase with its event; Running carries what the launch found out (addresses,
        the launch's stages, its volumes' targets). An instance gone or no longer ours is told nothing."""
        reason = tidy(reason)
        note = EventNote(reason=_PHASE_EVENTS[phase], message=reason or f"the domain is {phase.value.lower()}",
                         warning=phase is Phase.FAILED)
        patience = FENCED_PATIENCE_S if self.fenced.is_set() else REPORT_PATIENCE_S
        try:
            await self.nodeapi.report(StatusReport(
                vmi=self.vmi, uid=self.uid, phase=phase, reason=reason, event=note, interfaces=interfaces,
                launcher_started_at=started_at, launcher_ready_at=ready_at, volume_status=volumes), patience=patience)
        except ApiError as exc:
            if self.fenced.is_set():
                log.info("fenced; end not reported, the control plane has it from the lease", error=exc.message)
                return
            if exc.code not in (Code.NOT_FOUND, Code.CONFLICT, Code.FORBIDDEN):
                raise
            log.info("instance gone or no longer ours; phase not reported", phase=phase.value, error=exc.message)
            return
        log.info("phase", phase=phase.value, reason=reason)

    async def interfaces(self, interfaces: list[VMIInterface]) -> None:
        try:
            await self.nodeapi.report(StatusReport(vmi=self.vmi, uid=self.uid, interfaces=interfaces),
                                      patience=REPORT_PATIENCE_S)
        except ApiError as exc:  # the next ACK (a renewal) reports it again
            log.warning("interface address not reported", error=exc.message)

    async def condition(self, cond: NodeCondition) -> None:
        """A condition only the node sees (Paused, LibvirtdLost), with an event; a condition that
        cannot be said (the control plane away for long) is logged, never the end of the launcher."""
        note = EventNote(reason=cond.reason, message=cond.message, warning=cond.status == "True")
        try:
            await self.nodeapi.report(StatusReport(vmi=self.vmi, uid=self.uid, conditions=[cond], event=note),
                                      patience=CONDITION_PATIENCE_S)
        except ApiError as exc:
            log.warning("condition not reported", condition=cond.type, status=cond.status, error=exc.message)
            return
        log.info("condition", type=cond.type, status=cond.status, reason=cond.reason)

    async def event(self, note: EventNote) -> None:
        """An event of the VMI that changes nothing in it (a soft reboot sent)."""
        try:
            await self.nodeapi.report(StatusReport(vmi=self.vmi, uid=self.uid, event=note),
                                      patience=CONDITION_PATIENCE_S)
        except ApiError as exc:
            log.warning("event not reported", reason=note.reason, error=exc.message)

    async def volumes(self, volumes: list[VolumeStatus]) -> bool:
        """Its hotplugged volumes' status; False if not said (the keeper says it again at its next look)."""
        try:
            await self.nodeapi.report(StatusReport(vmi=self.vmi, uid=self.uid, volume_status=volumes),
                                      patience=CONDITION_PATIENCE_S)
        except ApiError as exc:
            log.warning("volume status not reported", error=exc.message)
            return False
        return True
