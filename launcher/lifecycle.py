"""Pure: what a libvirt domain event (or the loss of libvirtd) means for the VMI.

The runner turns libvirt's callbacks into (event, detail) names (launcher.libvirtd) and acts on the
verdict: an end becomes the final phase, a pause or resume a ``Paused`` condition (KubeVirt's: the
phase stays Running), a lost libvirtd a restart of it (KubeVirt's virt-launcher restarts its
virtqemud and re-registers its callbacks; QEMU and the guest run on meanwhile).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from proto.nodeapi import CONDITION_LIBVIRTD_LOST, CONDITION_PAUSED, NodeCondition
from proto.state import Phase

# not a libvirt event: the runner's name for "the connection to our libvirtd closed"
CONNECTION_CLOSED = "CONNECTION-CLOSED"

# libvirt's SUSPENDED details, as KubeVirt names the reasons of its Paused condition
PAUSE_REASONS = {
    "PAUSED": ("PausedByUser", "the domain was paused through libvirt"),
    "IOERROR": ("PausedIOError", "the hypervisor paused the guest on a disk I/O error (a full disk?)"),
    "WATCHDOG": ("PausedWatchdog", "the guest's watchdog fired"),
    "API_ERROR": ("PausedAPIError", "libvirt paused the guest after an API error"),
    "POSTCOPY_FAILED": ("PausedPostcopyFailed", "a post-copy migration failed"),
}

STOP_REASONS = {
    "SHUTDOWN": "guest shut down",
    "DESTROYED": "domain destroyed outside the launcher",
    "CRASHED": "guest crashed",
    "FAILED": "QEMU exited unexpectedly (killed or crashed)",
    "MIGRATED": "the guest migrated to another node",
}


@dataclass(frozen=True)
class Ended:
    phase: Phase
    reason: str


@dataclass(frozen=True)
class ConditionChanged:
    condition: NodeCondition


@dataclass(frozen=True)
class LibvirtdLost:
    reason: str


Verdict = Ended | ConditionChanged | LibvirtdLost | None


def judge(event: str, detail: str) -> Verdict:
    """What (event, detail) from launcher.libvirtd means; None for what changes nothing."""
    match event:
        case "STOPPED":
            if detail == "SHUTDOWN":
                return Ended(Phase.SUCCEEDED, STOP_REASONS["SHUTDOWN"])
            return Ended(Phase.FAILED, f"domain stopped: {STOP_REASONS.get(detail, detail)}")
        case "CRASHED":  # a guest panic; libvirt's STOPPED follows, but the panic is the reason
            return Ended(Phase.FAILED, "guest crashed (kernel panic)" if detail == "PANICKED" else "guest crashed")
        case "SUSPENDED" if detail not in ("MIGRATED", "POSTCOPY"):  # those resume by themselves
            reason, message = PAUSE_REASONS.get(detail, ("Paused", f"the domain is paused ({detail})"))
            return ConditionChanged(NodeCondition(type=CONDITION_PAUSED, status="True", reason=reason,
                                                  message=message))
        case "RESUMED":
            return ConditionChanged(NodeCondition(type=CONDITION_PAUSED, status="False", reason="Resumed",
                                                  message="the guest runs again"))
        case "CONNECTION-CLOSED":
            return LibvirtdLost(f"the launcher's libvirtd went away ({detail.lower()})")
    return None


def libvirtd_lost(reason: str) -> NodeCondition:
    return NodeCondition(type=CONDITION_LIBVIRTD_LOST, status="True", reason="LibvirtdDied",
                         message=f"{reason}; restarting it, the guest runs on")


def libvirtd_back(attempt: int) -> NodeCondition:
    return NodeCondition(type=CONDITION_LIBVIRTD_LOST, status="False", reason="LibvirtdRestarted",
                         message=f"libvirtd restarted (attempt {attempt}) and the running domain reattached")


def restart_gives_up(attempt: int, max_attempts: int, domain_active: bool | None) -> str | None:
    """Why a lost libvirtd ends the VMI, or None to try (again): a domain that did not survive
    cannot be reattached, and a libvirtd that will not come back leaves QEMU unmanaged."""
    if domain_active is False:
        return "libvirtd died and the domain did not survive it"
    if attempt > max_attempts:
        return f"libvirtd died and did not come back after {max_attempts} restarts"
    return None


def launch_failure(exc: BaseException) -> str:
    """Why a launch failed, for people: a full or over-quota state dir is said plainly."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"launch failed: no space left in the node's state directory{where}"
    message = getattr(exc, "message", None)  # an ApiError says it itself
    return f"launch failed: {message if isinstance(message, str) else f'{type(exc).__name__}: {exc}'}"
