"""Pure: what the launcher does to its running domain for the VMI's pause and soft-reboot requests
(scheduler.power records them; launcher.power carries the steps out).

A pause is desired state: while the VMI asks for it the guest stays paused, whatever resumed it
(a libvirtd restart, someone's ``virsh resume``). An unpause is acted on once, when asked: a guest
the hypervisor paused on a disk I/O error, or an admin through libvirt, stays paused until someone
asks, as QEMU's own rule is. Soft reboots are counted: each one asked and not yet done is one ACPI
reboot (several asked while one was pending make one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proto.state import VMI


class Step(enum.Enum):
    SUSPEND = "suspend"
    RESUME = "resume"
    REBOOT = "reboot"  # ACPI: the guest powers off, libvirt resets it instead of ending QEMU


@dataclass(frozen=True)
class Wanted:
    """The VMI's requests."""

    paused: bool = False
    pause_generation: int = 0
    reboots: int = 0

    @classmethod
    def of(cls, vmi: VMI) -> Wanted:
        return cls(paused=vmi.pause_requested, pause_generation=vmi.pause_generation, reboots=vmi.reboot_requests)


@dataclass(frozen=True)
class Done:
    """The requests the launcher has carried out."""

    pause_generation: int = 0
    reboots: int = 0

    @classmethod
    def at_start(cls, vmi: VMI) -> Done:
        """Nothing asked before the launch is owed: its guest boots afresh anyway (a pause asked
        before still holds, being desired state)."""
        return cls(pause_generation=vmi.pause_generation, reboots=vmi.reboot_requests)


def plan(wanted: Wanted, done: Done, domain_paused: bool) -> tuple[list[Step], Done]:
    """The steps to take now, in order, and what is done once they are taken."""
    steps: list[Step] = []
    if wanted.paused and not domain_paused:
        steps.append(Step.SUSPEND)
    elif not wanted.paused and domain_paused and wanted.pause_generation != done.pause_generation:
        steps.append(Step.RESUME)
    paused_after = wanted.paused or (domain_paused and Step.RESUME not in steps)
    reboots = done.reboots
    if wanted.reboots > done.reboots and not paused_after:
        steps.append(Step.REBOOT)
        reboots = wanted.reboots
    elif wanted.reboots < done.reboots:  # never owe a reboot from a count that went down
        reboots = wanted.reboots
    # a paused guest would not hear the power button until resumed: its reboot waits for that
    return steps, Done(pause_generation=wanted.pause_generation, reboots=reboots)
