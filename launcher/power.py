"""Carrying out the VMI's pause, unpause and soft-reboot requests on the running domain: the thin
shell around launcher.powerplan. It looks again whenever the VMI changes and whenever the domain
does (an event, libvirtd restarted), so a pause holds whatever resumed the guest; a step that fails
(libvirtd away for a moment) is tried again a second later.

The Paused condition is not said here: DomainFollower reports it from libvirt's own events, so the
VMI says what the guest is, not what was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from launcher.keeperloop import keep
from launcher.powerplan import Done, Step, Wanted, plan
from proto.nodeapi import EventNote

log = structlog.get_logger()
RETRY_S = 1.0


class PowerControl(Protocol):
    """What pausing and rebooting need of the launcher's libvirtd (launcher.libvirtd.PrivateLibvirtd)."""

    async def is_paused(self, dom: Any) -> bool: ...

    async def suspend(self, dom: Any) -> None: ...

    async def resume(self, dom: Any) -> None: ...

    async def reboot(self, dom: Any) -> None: ...


Note = Callable[[EventNote], Awaitable[None]]

# a pause or resume is said by the Paused condition's own event; a reboot has no condition
REBOOT_NOTE = EventNote(reason="SoftReboot", message="ACPI reboot sent to the guest, as asked")


class PowerKeeper:
    def __init__(self, control: PowerControl, domain: Callable[[], Any], note: Note, *,
                 retry: float = RETRY_S) -> None:
        """domain: the domain on libvirtd's current connection (None until it runs)."""
        self.control = control
        self.domain = domain
        self.note = note
        self.retry = retry
        self.wanted: Wanted | None = None
        self.done = Done()
        self.wake = asyncio.Event()
        self.standing_down = False
        self.held = False  # a live migration moves the guest (hold)

    def stand_down(self) -> None:
        """The instance is stopping: a pause no longer holds (the shutdown resumes the guest so it
        hears the power button, and must not be paused again behind it)."""
        self.standing_down = True

    def hold(self, held: bool) -> None:
        """While a live migration moves the guest, no step is taken here (its domain here pauses and
        goes at the end); a migration that failed lets the keeper catch up."""
        self.held = held
        self.wake.set()

    def want(self, wanted: Wanted) -> None:
        """The VMI's requests as last seen."""
        self.wanted = wanted
        self.wake.set()

    def poke(self) -> None:
        """The domain may have changed: look again."""
        self.wake.set()

    async def run(self) -> None:
        await keep(self.wake, self._look, what="pause/reboot step", retry=self.retry)

    async def _look(self) -> bool:
        await self.sync()
        return True  # a step that failed raised: looked at again after the retry

    async def sync(self) -> None:
        dom = self.domain()
        wanted = self.wanted
        if dom is None or wanted is None or self.standing_down or self.held:
            return
        steps, done = plan(wanted, self.done, await self.control.is_paused(dom))
        for step in steps:
            log.info("power step", step=step.value)
            if step is Step.SUSPEND:
                await self.control.suspend(dom)
            elif step is Step.RESUME:
                await self.control.resume(dom)
            else:
                await self.control.reboot(dom)
            # each step done is noted at once: a failure of a later one must not repeat it
            self.done = done if step is Step.REBOOT else Done(pause_generation=done.pause_generation,
                                                              reboots=self.done.reboots)
            if step is Step.REBOOT:
                await self.note(REBOOT_NOTE)
        self.done = done
