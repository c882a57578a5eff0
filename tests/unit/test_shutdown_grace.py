"""A stop's grace in the launcher's libvirtd: the power button, then the guest destroyed once its
grace is over, the grace read afresh as it waits (a forced stop cuts a stop under way short), and a
grace of 0 destroying at once without the button; against a small stateful domain."""

from __future__ import annotations

import asyncio
import time

import libvirt

from launcher.libvirtd import PrivateLibvirtd


class Domain:
    """A guest that powers off on the button after `obeys_after` seconds, or never (None)."""

    def __init__(self, obeys_after: float | None) -> None:
        self.obeys_after = obeys_after
        self.pressed_at: float | None = None
        self.destroyed = False
        self.buttons = 0

    def name(self) -> str:
        return "vm1"

    def state(self) -> tuple[int, int]:
        return libvirt.VIR_DOMAIN_RUNNING, 0

    def shutdownFlags(self, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.buttons += 1
        self.pressed_at = time.monotonic()

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        powered_off = self.obeys_after is not None and self.pressed_at is not None and \
            time.monotonic() >= self.pressed_at + self.obeys_after
        return not (self.destroyed or powered_off)

    def destroy(self) -> None:
        self.destroyed = True


async def test_a_guest_that_obeys_powers_off_within_its_grace() -> None:
    dom = Domain(obeys_after=0.3)
    assert await PrivateLibvirtd(huge_pages=False).shutdown(dom, lambda: 5) == "shutdown"
    assert dom.buttons == 1 and not dom.destroyed


async def test_a_guest_that_ignores_the_button_is_destroyed_when_its_grace_is_cut_short() -> None:
    dom = Domain(obeys_after=None)
    grace = [30.0]
    start = time.monotonic()

    async def forced_stop() -> None:  # a second stop, --force --grace-period 1, a moment later
        await asyncio.sleep(0.3)
        grace[0] = 1.0

    cut = asyncio.create_task(forced_stop())
    assert await PrivateLibvirtd(huge_pages=False).shutdown(dom, lambda: grace[0]) == "destroyed"
    await cut
    assert dom.destroyed and 1.0 <= time.monotonic() - start < 5


async def test_a_grace_of_zero_destroys_at_once_without_the_button() -> None:
    dom = Domain(obeys_after=0.0)
    start = time.monotonic()
    assert await PrivateLibvirtd(huge_pages=False).shutdown(dom, lambda: 0) == "destroyed"
    assert dom.destroyed and dom.buttons == 0 and time.monotonic() - start < 1
