"""The node's end of readiness and liveness probes (proto.probes): each Running VMI of this node with a
probe is probed at its pod address from the node's network namespace, as kubelet probes a pod's address
(a masquerade VM's port reaches its guest there, as port-forward's and node ports' traffic does). Its
Ready condition is said to the control plane whenever it differs from what its readiness probe says;
a liveness probe that fails failureThreshold times in a row ends it, Failed.

The bookkeeping is proto.probes.ProbeRun's; this is the I/O: the connection, the request, the report.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import structlog

from handler.portforward import Dialer, pod_address
from handler.syncstatus import Reporter
from proto.errors import ApiError
from proto.nodeapi import CONDITION_READY, EventNote, NodeCondition, StatusReport, tidy
from proto.probes import KINDS, ProbeRun, http_request, http_verdict
from proto.spec import Probe
from proto.state import VMI, Phase, is_ready

log = structlog.get_logger()
LOOK_S = 1.0  # how often a node's VMIs are looked at for new probes; due ones are started on time
MAX_HEAD = 4096  # an answer's status line is in its first bytes
FAILED = "ReadinessProbeFailed"
UNHEALTHY = "Unhealthy"  # kubelet's event for a failed probe
PATIENCE_S = 5.0  # a report the bus cannot take now is made again at the next probe


async def probe_once(dial: Dialer, address: str, probe: Probe) -> str | None:
    """One probe of address: None if it passed, else why not."""
    try:
        async with asyncio.timeout(probe.timeout_seconds):
            end = await dial(address, probe.port)
            try:
                if probe.kind == "tcp":
                    return None
                await end.write(http_request(probe, address))
                head = b""
                while b"\r\n" not in head and len(head) < MAX_HEAD:
                    chunk = await end.read(MAX_HEAD)
                    if not chunk:
                        break
                    head += chunk
                return http_verdict(head.split(b"\r\n", 1)[0])
            finally:
                await end.close()
    except TimeoutError:
        return f"no answer within {probe.timeout_seconds}s"
    except OSError as exc:  # asyncio's connect says "Connect call failed": the errno says why
        return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


Key = tuple[str, str]  # (VMI uid, "readiness_probe" | "liveness_probe")


class Prober:
    def __init__(self, vmis: Callable[[], Awaitable[list[VMI]]], dial: Dialer, reporter: Reporter, node: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.vmis, self.dial, self.reporter, self.node, self.clock = vmis, dial, reporter, node, clock
        self.runs: dict[Key, ProbeRun] = {}  # each probe's bookkeeping
        self.checks: dict[Key, asyncio.Task[None]] = {}  # each probe under way

    async def run(self) -> None:
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self.pause())
        finally:
            for task in self.checks.values():
                task.cancel()

    def pause(self) -> float:
        """Until the next probe is due, or the next look at this node's VMIs."""
        now = self.clock()
        return max(0.0, min([LOOK_S, *(run.next_at - now for key, run in self.runs.items() if key not in self.checks)]))

    async def tick(self) -> None:
        """Start the probes that are due; forget those of VMIs that no longer run here."""
        now = self.clock()
        probed = {(v.uid, kind): (v, probe) for v in await self.vmis()
                  if v.node_name == self.node and v.phase is Phase.RUNNING
                  for kind in KINDS if (probe := getattr(v.spec, kind)) is not None}
        for key in [k for k in self.runs if k not in probed]:
            del self.runs[key]
            if (task := self.checks.pop(key, None)) is not None:
                task.cancel()
        for key, (vmi, probe) in probed.items():
            run = self.runs.get(key)
            if run is None:  # from when it started running; readiness as the VMI says (a restarted handler)
                run = self.runs[key] = ProbeRun.start(probe, vmi.started_at or now,
                                                      ready=is_ready(vmi) if key[1] == "readiness_probe" else True)
            if key not in self.checks and run.due(now):
                self.checks[key] = asyncio.create_task(self._check(vmi, key, run))

    async def _check(self, vmi: VMI, key: Key, run: ProbeRun) -> None:
        try:
            try:
                error = await probe_once(self.dial, pod_address(vmi, self.node, vmi.name), run.probe)
            except ApiError as exc:  # no pod address (yet): a failure like any other
                error = exc.message
            except Exception:  # noqa: BLE001 - a fault of the prober's own, never held against the guest
                log.exception("probe not run", vmi=vmi.name, node=self.node, probe=key[1])
                run.postpone(self.clock())
                return
            run.observe(error, self.clock())
            if key[1] == "liveness_probe":
                if not run.ready:
                    await self._end(vmi, run)
            elif run.ready != is_ready(vmi):
                await self._say(vmi, run)
        finally:
            self.checks.pop(key, None)

    async def _say(self, vmi: VMI, run: ProbeRun) -> None:
        # said only where the VMI disagrees: a False here is one that was Ready (the control plane
        # makes it not Ready, waiting for its probe, when it starts running)
        condition = NodeCondition(type=CONDITION_READY, status="True") if run.ready else NodeCondition(
            type=CONDITION_READY, status="False", reason=FAILED, message=tidy(f"readiness probe: {run.last_error}"))
        try:
            await self.reporter.report(StatusReport(vmi=vmi.name, uid=vmi.uid, conditions=[condition]),
                                       patience=PATIENCE_S)
            log.info("readiness said", vmi=vmi.name, node=self.node, ready=run.ready,
                     error=None if run.ready else run.last_error)
        except Exception as exc:  # noqa: BLE001 - said again at the next probe that still disagrees
            log.info("readiness not said", vmi=vmi.name, node=self.node, error=str(exc) or type(exc).__name__)

    async def _end(self, vmi: VMI, run: ProbeRun) -> None:
        """Its liveness probe failed failureThreshold times in a row: the instance ends, Failed, as
        kubelet's restart of virt-launcher's container ends a KubeVirt VMI; its launcher, hearing it,
        destroys the domain (launcher.runner), and its VM runs a new one as its run strategy says."""
        why = tidy(f"liveness probe failed {run.failures} times: {run.last_error}")
        try:
            await self.reporter.report(StatusReport(vmi=vmi.name, uid=vmi.uid, phase=Phase.FAILED, reason=why,
                                                    event=EventNote(reason=UNHEALTHY, message=why, warning=True)),
                                       patience=PATIENCE_S)
            log.warning("liveness probe failed: instance ended", vmi=vmi.name, node=self.node, error=run.last_error)
        except Exception as exc:  # noqa: BLE001 - the next probe fails again and says it again
            log.info("liveness failure not said", vmi=vmi.name, node=self.node, error=str(exc) or type(exc).__name__)
