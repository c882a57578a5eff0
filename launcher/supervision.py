"""Following a running domain until it ends: its events become conditions or its end, and a lost
libvirtd is restarted (as KubeVirt's virt-launcher restarts its virtqemud). The decisions are
launcher.lifecycle's; this is the thin shell around them, driving a ``Hypervisor`` (the real one is
launcher.libvirtd.PrivateLibvirtd; tests drive a stateful fake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from launcher import lifecycle
from proto.nodeapi import NodeCondition
from proto.state import Phase

log = structlog.get_logger()
LIBVIRTD_RESTARTS = 3
RESTART_DELAY_S = 1.0  # as KubeVirt: no busy loop if libvirtd keeps dying


class Hypervisor(Protocol):
    """What following a domain needs of the launcher's libvirtd."""

    pid: int | None

    def watch_lifecycle(self, callback: Callable[[str, str], None]) -> None: ...

    async def restart(self, netns: str, workdir: Path) -> None: ...

    async def lookup(self, name: str) -> tuple[Any, bool]: ...

    def kill_qemu(self, name: str) -> int | None: ...


ReportCondition = Callable[[NodeCondition], Awaitable[None]]


class DomainFollower:
    def __init__(self, hypervisor: Hypervisor, report_condition: ReportCondition, *, vmi: str, netns: str,
                 workdir: Path, restarts: int = LIBVIRTD_RESTARTS, delay: float = RESTART_DELAY_S,
                 on_change: Callable[[], None] | None = None) -> None:
        """on_change: told of every domain event and of a reattach after a libvirtd restart, for
        whoever keeps the domain as the VMI asks (launcher.power)."""
        self.hypervisor = hypervisor
        self.on_change = on_change or (lambda: None)
        self.report_condition = report_condition
        self.vmi = vmi
        self.netns = netns
        self.workdir = workdir
        self.restarts = restarts
        self.delay = delay
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.dom: Any = None  # the domain on the current connection: libvirtd may have been restarted
        # what was last said of each condition: libvirt says RESUMED as every domain starts, which
        # is no news ("Paused: False, the guest runs again" on a guest never paused)
        self.said: dict[str, str] = {}
        self.listeners: list[Callable[[str, str], None]] = []

    def on_event(self, event: str, detail: str) -> None:
        """libvirt's callback (on the loop, through libvirtaio): queued, never handled inline; and told
        at once to whoever listens (a migration's target, waiting for its guest)."""
        self.events.put_nowait((event, detail))
        for listener in self.listeners:
            listener(event, detail)

    def watch(self) -> None:
        self.hypervisor.watch_lifecycle(self.on_event)

    async def follow(self) -> tuple[Phase, str]:
        """Domain events until the domain ends; returns the end (phase, reason)."""
        while True:
            event, detail = await self.events.get()
            log.info("domain event", event_name=event, detail=detail)
            self.on_change()
            match lifecycle.judge(event, detail):
                case lifecycle.Ended(phase=phase, reason=reason):
                    return phase, reason
                case lifecycle.ConditionChanged(condition=cond):
                    if self.said.get(cond.type, "False") != cond.status:
                        self.said[cond.type] = cond.status
                        await self.report_condition(cond)
                case lifecycle.LibvirtdLost(reason=reason):
                    ended = await self._recover(reason)
                    if ended is not None:
                        return ended

    async def _recover(self, reason: str) -> tuple[Phase, str] | None:
        """A new libvirtd, which reattaches the running QEMU; said in the VMI meanwhile. None once
        the domain is followed again, else the end."""
        log.warning("libvirtd lost; restarting it", reason=reason)
        await self.report_condition(lifecycle.libvirtd_lost(reason))
        attempt = 0
        while True:
            attempt += 1
            active: bool | None = None
            try:
                await self.hypervisor.restart(self.netns, self.workdir)
                self.watch()
                self.dom, active = await self.hypervisor.lookup(self.vmi)
            except Exception as exc:  # libvirt's errors, or a libvirtd that would not start
                log.warning("libvirtd restart failed", attempt=attempt, error=str(exc).splitlines()[0][:200])
            why = lifecycle.restart_gives_up(attempt, self.restarts, active)
            if why is not None:
                # No libvirtd manages it: QEMU must not run on unsupervised (nor twice, once rerun).
                pid = await asyncio.to_thread(self.hypervisor.kill_qemu, self.vmi)
                log.warning("giving up on libvirtd", reason=why, qemu_killed=pid)
                return Phase.FAILED, why
            if active:
                log.info("libvirtd restarted; domain reattached", attempt=attempt, pid=self.hypervisor.pid)
                await self.report_condition(lifecycle.libvirtd_back(attempt))
                self.on_change()
                return None
            await asyncio.sleep(self.delay)
