"""Pure: what the launcher does to its running domain's disks for the VMI's hotplugged volumes
(scheduler.hotplug writes them into the spec; launcher.hotplug carries the steps out), and what it
says of its volumes (KubeVirt's status.volumeStatus).

The domain is the truth of what is attached: every disk carries its volume's name as its alias
(launcher.domain), so a launcher, a restarted libvirtd or a step that failed halfway is read back
from it, never from memory. A disk the spec no longer has is detached; a hotpluggable volume the
domain has no disk for is attached once its file is there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from launcher.domain import DISK_ALIAS_PREFIX
from proto.hotplug import hotplugged
from proto.spec import VMSpec
from proto.state import HotplugPhase, VolumeStatus

SCSI_PREFIX = "sd"
READY_REASON = "VolumeReady"  # KubeVirt's virt-handler's words, from here down
PENDING_REASON = "VolumePending"
FAILED_REASON = "AttachFailed"
DETACHING_REASON = "VolumeDetaching"


@dataclass(frozen=True)
class Steps:
    attach: tuple[str, ...]  # volumes of the spec (by name) to attach, in the spec's order
    detach: tuple[str, ...]  # disks of the domain the spec no longer has


def plan(spec: VMSpec, live: Mapping[str, str]) -> Steps:
    """live: the domain's disks, volume name -> target."""
    names = {v.name for v in spec.volumes}
    return Steps(attach=tuple(n for n in hotplugged(spec) if n not in live),
                 detach=tuple(sorted(n for n in live if n not in names)))


def free_unit(used: Iterable[int]) -> int:
    """The LUN a hotplugged disk takes on the SCSI controller's target 0: the first free one from 1. The
    guest hears of a disk by virtio-scsi's event, and Linux answers an event for LUN 0 with a scan of the
    whole target, which a guest that scans by hand (the test guest: scsi_mod.scan=manual) never runs;
    for any other LUN it adds that one disk."""
    taken = set(used)
    return next(unit for unit in range(1, len(taken) + 2) if unit not in taken)


def free_target(used: Iterable[str]) -> str:
    """The first SCSI target (sda, sdb, ...) no disk of the domain has; libvirt wants them unique."""
    taken = set(used)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if SCSI_PREFIX + letter not in taken:
            return SCSI_PREFIX + letter
    raise ValueError("no SCSI target left (sda-sdz all taken)")


@dataclass(frozen=True)
class Outcome:
    """How the launcher's last try at each volume went, beside what the domain says."""

    waiting: Mapping[str, str]  # not attached yet, and why (its file on its way)
    failed: Mapping[str, str]  # an attach or a detach that failed, and its error


def statuses(spec: VMSpec, live: Mapping[str, str], outcome: Outcome) -> list[VolumeStatus]:
    """Every volume of the spec with its target, a hotplugged one with its phase; then the disks
    still attached that the spec no longer has (Detaching)."""
    hot = hotplugged(spec)
    out: list[VolumeStatus] = []
    for volume in spec.volumes:
        name, target = volume.name, live.get(volume.name, "")
        if name not in hot:
            out.append(VolumeStatus(name=name, target=target))
        elif target:
            out.append(VolumeStatus(name=name, target=target, phase=HotplugPhase.READY, reason=READY_REASON,
                                    message=f"Successfully attach hotplugged volume {name} to VM", hotplug=True))
        elif name in outcome.failed:
            out.append(VolumeStatus(name=name, phase=HotplugPhase.PENDING, reason=FAILED_REASON,
                                    message=outcome.failed[name], hotplug=True))
        else:
            out.append(VolumeStatus(name=name, phase=HotplugPhase.PENDING, reason=PENDING_REASON,
                                    message=outcome.waiting.get(name, f"volume {hot[name]} is not attached yet"),
                                    hotplug=True))
    names = {v.name for v in spec.volumes}
    for name in sorted(n for n in live if n not in names):
        out.append(VolumeStatus(name=name, target=live[name], phase=HotplugPhase.DETACHING, reason=DETACHING_REASON,
                                message=outcome.failed.get(name, f"Volume {name} is being detached from the VM"),
                                hotplug=True))
    return out


@dataclass(frozen=True)
class LiveDisks:
    """The domain's disks as its live XML has them."""

    targets: dict[str, str]  # volume name (its alias, launcher.domain) -> target
    units: frozenset[int]  # the LUNs taken on the SCSI controller's target 0


def live_disks(domain_xml: str) -> LiveDisks:
    targets: dict[str, str] = {}
    units: set[int] = set()
    for disk in ET.fromstring(domain_xml).iterfind("devices/disk"):
        alias, target, address = disk.find("alias"), disk.find("target"), disk.find("address")
        name = alias.get("name", "") if alias is not None else ""
        if name.startswith(DISK_ALIAS_PREFIX) and target is not None and target.get("dev"):
            targets[name.removeprefix(DISK_ALIAS_PREFIX)] = target.get("dev", "")
        if address is not None and address.get("type") == "drive" and address.get("target", "0") == "0" \
                and (address.get("unit") or "").isdigit() and target is not None and target.get("bus") == "scsi":
            units.add(int(address.get("unit", "0")))
    return LiveDisks(targets=targets, units=frozenset(units))
