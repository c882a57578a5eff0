"""virtctl's pause, unpause and soft-reboot: each is recorded in the VMI as desired state, and the
launcher running it carries it out with libvirt (launcher.power). A pause is in the VMI, not in a
message, so it outlasts a handler restart or a bus outage and is done once the launcher hears it.

The rules are pure functions of the current VMI (applied by compare-and-set, so they always judge
the newest one); the api verbs are the thin shell around them.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proto.api import Ack, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.nodeapi import CONDITION_PAUSED
from proto.state import FINAL_PHASES, VMI, Phase
from proto.validation import check_name
from servicekit.store import Store


def is_paused(vmi: VMI) -> bool:
    """What the launcher last saw: the guest paused (by a user, or by the hypervisor on an I/O error)."""
    return any(c.type == CONDITION_PAUSED and c.status == "True" for c in vmi.conditions)


def _must_run(vmi: VMI, what: str) -> None:
    if vmi.phase in FINAL_PHASES or vmi.stop_requested:
        how = "stopping" if vmi.phase not in FINAL_PHASES else vmi.phase.value
        raise ApiError(Code.INVALID, f"VMI {vmi.name} is not running ({how}); it cannot be {what}")
    if vmi.phase is Phase.UNKNOWN:  # its node is silent: nobody would carry it out
        raise ApiError(Code.UNAVAILABLE, f"VMI {vmi.name}'s node is not reporting; try again once it is")
    if vmi.phase is not Phase.RUNNING:
        # Retryable: it is on its way (`virtbus start x && virtbus pause x --wait` waits for it).
        raise ApiError(Code.CONFLICT, f"VMI {vmi.name} is not running yet ({vmi.phase.value}); "
                                      f"it can be {what} once it runs")


def pause(vmi: VMI) -> VMI | None:
    """The VMI asked to pause; None when it is already asked (a pause is idempotent)."""
    _must_run(vmi, "paused")
    if vmi.pause_requested:
        return None
    return msgspec.structs.replace(vmi, pause_requested=True, pause_generation=vmi.pause_generation + 1)


def unpause(vmi: VMI) -> VMI | None:
    """The VMI asked to run again, also when the hypervisor paused it (virtctl unpause resumes
    whatever paused it); None when it is neither paused nor asked to be."""
    _must_run(vmi, "unpaused")
    if not vmi.pause_requested and not is_paused(vmi):
        return None
    return msgspec.structs.replace(vmi, pause_requested=False, pause_generation=vmi.pause_generation + 1)


def soft_reboot(vmi: VMI) -> VMI:
    """One more ACPI reboot asked for. A paused guest would not see the button until unpaused, so it
    is refused, as virtctl refuses it."""
    _must_run(vmi, "rebooted")
    if vmi.pause_requested or is_paused(vmi):
        raise ApiError(Code.INVALID, f"VMI {vmi.name} is paused; unpause it first")
    return msgspec.structs.replace(vmi, reboot_requests=vmi.reboot_requests + 1)


class PowerApi:
    """``virtbus.api.{vm,vmi}.{pause,unpause,soft-reboot}``: ``{"name": ...}``, an Ack."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _instance(self, body: bytes, kind: str) -> str:
        name = decode_request(body, NameRequest).name
        check_name(name, "name")
        if kind == "vm":
            await self.store.vms.require(name, "VM")
            if await self.store.vmis.get(name) is None:
                raise ApiError(Code.NOT_FOUND, f"VM {name} has no instance; start it first")
        else:
            await self.store.vmis.require(name, "VMI")
        return name

    async def _mutate(self, name: str, change: Callable[[VMI], VMI | None]) -> bool:
        """Applies the rule by CAS (so it judges the newest VMI); whether it wrote anything."""
        written = False

        def apply(vmi: VMI) -> VMI | None:
            nonlocal written
            new = change(vmi)
            written = new is not None
            return new

        if await self.store.vmis.mutate(name, apply) is None:
            raise ApiError(Code.NOT_FOUND, f"VMI {name} not found")
        return written

    async def pause(self, body: bytes, kind: str = "vm") -> Ack:
        name = await self._instance(body, kind)
        if not await self._mutate(name, pause):
            return Ack(message=f"VM {name} is already paused")
        return Ack(message=f"VM {name} was scheduled to pause")

    async def unpause(self, body: bytes, kind: str = "vm") -> Ack:
        name = await self._instance(body, kind)
        if not await self._mutate(name, unpause):
            return Ack(message=f"VM {name} is not paused")
        return Ack(message=f"VM {name} was scheduled to unpause")

    async def soft_reboot(self, body: bytes, kind: str = "vm") -> Ack:
        name = await self._instance(body, kind)
        await self._mutate(name, soft_reboot)
        return Ack(message=f"VM {name} was scheduled to soft reboot (ACPI)")
