"""The status a handler writes after every sync of an instance, success or not (KubeVirt's
virt-handler does the same with the VMI's ``Synchronized`` condition): a failed sync says why on
the VMI, where ``virtbus get vmi -o yaml`` shows it, while the work queue retries with back-off;
the next successful sync says it is fine again. Nothing is said while all goes well.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from proto.nodeapi import CONDITION_SYNCHRONIZED, NodeCondition, StatusReply, StatusReport, tidy
from proto.state import VMI

log = structlog.get_logger()
PATIENCE_S = 5.0  # a status that cannot be said now is said by the next sync


class Reporter(Protocol):
    async def report(self, report: StatusReport, patience: float = -1) -> StatusReply: ...


class SyncStatus:
    def __init__(self, reporter: Reporter, node: str) -> None:
        self.reporter = reporter
        self.node = node
        self.failing: dict[str, str] = {}  # VMI uid -> the error said

    async def failed(self, vmi: VMI | None, error: BaseException) -> None:
        if vmi is None or vmi.node_name != self.node:
            return  # not ours to speak for
        message = tidy(str(error) or type(error).__name__)
        if self.failing.get(vmi.uid) == message:
            return  # said already: once per error, not once per retry
        if await self._say(vmi, NodeCondition(type=CONDITION_SYNCHRONIZED, status="False", reason="SyncFailed",
                                              message=message)):
            self.failing[vmi.uid] = message

    async def succeeded(self, vmi: VMI | None) -> None:
        if vmi is None or vmi.uid not in self.failing:
            return
        if vmi.node_name != self.node or await self._say(vmi, NodeCondition(
                type=CONDITION_SYNCHRONIZED, status="True", reason="Synced", message="")):
            self.failing.pop(vmi.uid, None)

    async def _say(self, vmi: VMI, condition: NodeCondition) -> bool:
        try:
            await self.reporter.report(StatusReport(vmi=vmi.name, uid=vmi.uid, conditions=[condition]),
                                       patience=PATIENCE_S)
        except Exception as exc:  # noqa: BLE001 - saying it must never hide the sync's own error
            log.info("sync status not said", vmi=vmi.name, error=str(exc) or type(exc).__name__)
            return False
        return True
