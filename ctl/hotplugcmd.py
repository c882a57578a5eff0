"""``virtbus addvolume VM --volume-name V`` and ``virtbus removevolume VM --volume-name V``, virtctl's:
a volume put on or taken off a running VM's guest (proto.hotplug). As virtctl, it asks the VM first
and the VirtualMachineInstance of that name when there is no such VM; ``--wait`` follows the
instance's status.volumeStatus until the guest has the disk (or no longer has it)."""

from __future__ import annotations

import argparse
from typing import Any

from ctl.client import ApiClient
from ctl.progress import wait_for
from ctl.stdout import say
from proto.api import Ack, NameRequest, VMIReply
from proto.errors import ApiError, Code
from proto.hotplug import AddVolumeRequest, RemoveVolumeRequest
from proto.state import FINAL_PHASES, HotplugPhase


def add_parser(sub: Any) -> None:
    a = sub.add_parser("addvolume", help="attach a volume (DataVolume, PVC) to a running VM as a scsi disk "
                                         "(virtctl addvolume); kept in the VM's spec")
    a.add_argument("name", help="the VM, or a VirtualMachineInstance of its own")
    a.add_argument("--volume-name", required=True, help="the volume (virtbus volume list)")
    a.add_argument("--disk-name", default=None, help="its name in the spec (default: the volume's)")
    a.add_argument("--serial", default=None, help="the serial number the guest reads (default: the disk's name)")
    a.add_argument("--cache", default=None, choices=["none", "writethrough", "writeback"])
    a.add_argument("--bus", default="scsi", help="scsi, the only bus a disk is hotplugged on here")
    a.add_argument("--disk-type", default="disk", help="disk (a lun is refused: virtbus volumes are files)")
    r = sub.add_parser("removevolume", help="detach a hotplugged volume from a running VM (virtctl removevolume)")
    r.add_argument("name", help="the VM, or a VirtualMachineInstance of its own")
    r.add_argument("--volume-name", required=True, help="the volume's name in the spec (its disk's)")
    for p in (a, r):
        p.add_argument("--persist", action="store_true",
                       help="accepted as virtctl's, which no longer does anything: the VM's spec always keeps it")
        p.add_argument("--dry-run", action="store_true", help="check the request and change nothing")
        p.add_argument("--wait", action="store_true", help="wait until the guest has (or no longer has) the disk, "
                                                           "showing progress")
        p.add_argument("--timeout", type=float, default=120.0)


async def _ask(api: ApiClient, verb: str, request: AddVolumeRequest | RemoveVolumeRequest) -> tuple[str, str]:
    """(the answer, the kind that took it): the VM's verb, else the instance's when there is no VM."""
    try:
        return (await api.call("vm", verb, request, Ack)).message, "vm"
    except ApiError as exc:
        if exc.code is not Code.NOT_FOUND or exc.message != f"VM {request.name!r} not found":
            raise
    return (await api.call("vmi", verb, request, Ack)).message, "vmi"


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    adding = args.command == "addvolume"
    name = (args.disk_name or args.volume_name) if adding else args.volume_name  # its name in the spec
    request: AddVolumeRequest | RemoveVolumeRequest
    if adding:
        request = AddVolumeRequest(name=args.name, volume_name=args.volume_name, disk_name=args.disk_name,
                                   serial=args.serial, cache=args.cache, bus=args.bus, disk_type=args.disk_type,
                                   dry_run=args.dry_run)
    else:
        request = RemoveVolumeRequest(name=args.name, volume_name=args.volume_name, dry_run=args.dry_run)
    message, kind = await _ask(api, args.command, request)
    say(message)
    if not args.wait or args.dry_run:
        return 0

    async def probe() -> tuple[bool, str]:
        try:
            vmi = (await api.call("vmi", "get", NameRequest(name=args.name), VMIReply)).item
        except ApiError as exc:
            if exc.code is Code.NOT_FOUND and kind == "vm":
                return True, "the VM is not running: its next start has it" if adding else "the VM is not running"
            raise
        if vmi.phase in FINAL_PHASES:
            return True, f"the instance is {vmi.phase.value}: the VM's next start has it as its spec says"
        entry = next((v for v in vmi.volume_status if v.name == name), None)
        if not adding:
            return entry is None, "removed" if entry is None else f"{entry.phase or 'attached'}: {entry.message}"
        if entry is None or entry.phase is None:
            return False, "asked"
        if entry.phase is HotplugPhase.READY:
            return True, f"Ready as {entry.target}"
        return False, f"{entry.phase.value}: {entry.message}"

    await wait_for(f"volume {name} of {args.name}", probe, args.timeout)
    return 0
