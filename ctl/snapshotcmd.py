"""``virtbus volume snapshot|restore`` and ``virtbus vm snapshot|restore``: snapshots in the object
store (KubeVirt's VolumeSnapshot, VirtualMachineSnapshot and VirtualMachineRestore), with progress."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import clonecmd, render
from ctl.client import ApiClient
from ctl.progress import wait_for
from ctl.stdout import say
from proto import durations
from proto.api import Ack, NameRequest, VolumeReply
from proto.errors import ApiError, Code
from proto.snapshotapi import (
    SnapshotCreate,
    SnapshotList,
    SnapshotReply,
    VMRestore,
    VMSnapshotCreate,
    VMSnapshotList,
    VMSnapshotView,
    VolumeRestore,
)
from proto.snapshots import MAX_FAILURE_DEADLINE_S, SnapshotPhase, VolumeSnapshot, percent
from proto.state import PersistentVolume, VolumePhase

VERBS = ("list", "get", "delete")


def add_volume_parsers(vsub: Any) -> None:
    vs = vsub.add_parser("snapshot", help="snapshot a volume into the object store; or: snapshot list|get|delete")
    vs.add_argument("volume", help="the volume (or list, get NAME, delete NAME)")
    vs.add_argument("snapshot", nargs="?", help="with get|delete: the snapshot")
    vs.add_argument("--name", default=None, help="the snapshot's name (default: <volume>-<time>)")
    vs.add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    vs.add_argument("--wait", action="store_true", help="wait until Ready, showing progress")
    vs.add_argument("--timeout", type=float, default=1800.0)
    vr = vsub.add_parser("restore", help="a new volume whose first content is a snapshot, on any node")
    vr.add_argument("snapshot")
    vr.add_argument("--to", required=True, dest="name", help="the new volume's name")
    vr.add_argument("--node", default=None, help="the node it lives on; else the first VM's")
    vr.add_argument("--wait", action="store_true", help="wait until Ready, showing progress (needs --node)")
    vr.add_argument("--timeout", type=float, default=1800.0)


def add_vm_parser(sub: Any) -> None:
    v = sub.add_parser("vm", help="a VM's snapshots and clones (VirtualMachineSnapshot, VirtualMachineRestore, "
                                  "VirtualMachineClone)")
    vsub = v.add_subparsers(dest="vm_command", required=True)
    s = vsub.add_parser("snapshot", help="all of a VM's volumes at once, while it runs; or: snapshot list|get|delete")
    s.add_argument("vm", help="the VM (or list, get NAME, delete NAME)")
    s.add_argument("snapshot", nargs="?")
    s.add_argument("--name", default=None)
    s.add_argument("--failure-deadline", default=None, metavar="DURATION",
                   help="Failed if not taken by then (spec.failureDeadline: 5m, 90s, 1h30m; 0 for none; "
                        "default 5m)")
    s.add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    s.add_argument("--wait", action="store_true")
    s.add_argument("--timeout", type=float, default=1800.0)
    clonecmd.add_vm_parser(vsub)
    r = vsub.add_parser("restore", help="the VM's volumes get the snapshot's content (the VM must be stopped)")
    r.add_argument("snapshot")
    r.add_argument("--node", default=None, help="the volumes' new files on this node (the VM follows them)")
    r.add_argument("--to", default=None, help="a new VM of this name instead, made of the snapshot, stopped")
    r.add_argument("--wait", action="store_true")
    r.add_argument("--timeout", type=float, default=1800.0)


def _target(args: argparse.Namespace) -> str:
    if not args.snapshot:
        raise ApiError(Code.BAD_REQUEST, f"{args.volume if hasattr(args, 'volume') else args.vm} needs a snapshot name")
    return str(args.snapshot)


async def wait_volume(api: ApiClient, name: str, limit: float) -> None:
    async def probe() -> tuple[bool, str]:
        v = (await api.call("volume", "get", NameRequest(name=name), VolumeReply)).item
        if v.phase is VolumePhase.FAILED:
            raise ApiError(Code.INVALID, f"volume {name} failed: {v.reason}")
        return v.phase is VolumePhase.READY, volume_state(v)

    await wait_for(f"volume/{name}", probe, limit)


def volume_state(v: PersistentVolume) -> str:
    if v.phase is VolumePhase.POPULATING:
        return f"Populating {percent(v.progress)}".rstrip()
    if v.phase is VolumePhase.PENDING and v.node is None:
        return "Pending (placed with the first VM that uses it)"
    return v.phase.value + (f": {v.reason}" if v.reason else "")


def snapshot_state(s: VolumeSnapshot) -> str:
    if s.phase is SnapshotPhase.IN_PROGRESS:
        return f"InProgress {percent(s.progress)}".rstrip()
    return s.phase.value + (f": {s.reason}" if s.reason else "")


async def wait_snapshot(api: ApiClient, name: str, limit: float) -> None:
    async def probe() -> tuple[bool, str]:
        s = (await api.call("snapshot", "get", NameRequest(name=name), SnapshotReply)).item
        if s.phase is SnapshotPhase.FAILED:
            raise ApiError(Code.INVALID, f"snapshot {name} failed: {s.reason}")
        return s.phase is SnapshotPhase.READY, snapshot_state(s)

    await wait_for(f"snapshot/{name}", probe, limit)


async def volume_snapshot(api: ApiClient, args: argparse.Namespace) -> int:
    if args.volume == "list":
        items = (await api.call("snapshot", "list", {}, SnapshotList)).items
        if args.output:
            say(render.structured(items, args.output))
            return 0
        say(render.table(["NAME", "VOLUME", "NODE", "PHASE", "SIZE", "ONLINE", "AGE"],
                         [[s.name, s.volume, s.node, snapshot_state(s), str(s.size), "yes" if s.online else "no",
                           render.age(s.created_at)] for s in items]))
    elif args.volume == "get":
        item = (await api.call("snapshot", "get", NameRequest(name=_target(args)), SnapshotReply)).item
        say(render.structured(item, args.output or "yaml"))
    elif args.volume == "delete":
        say((await api.call("snapshot", "delete", NameRequest(name=_target(args)), Ack)).message)
    else:
        snap = (await api.call("snapshot", "create", SnapshotCreate(volume=args.volume, name=args.name),
                               SnapshotReply)).item
        say(f"snapshot/{snap.name} of volume/{snap.volume} asked; node {snap.node} copies it")
        if args.wait:
            await wait_snapshot(api, snap.name, args.timeout)
    return 0


async def volume_restore(api: ApiClient, args: argparse.Namespace) -> int:
    made = (await api.call("volume", "restore", VolumeRestore(snapshot=args.snapshot, name=args.name, node=args.node),
                           VolumeReply)).item
    where = f"node {made.node} writes it now" if made.node else "the node of the first VM that uses it writes it"
    say(f"volume/{made.name} restored from snapshot/{args.snapshot} ({made.size}); {where}")
    if args.wait and made.node:
        await wait_volume(api, made.name, args.timeout)
    return 0


async def apply(api: ApiClient, asked: VMSnapshotCreate | VMRestore) -> None:
    """A VirtualMachineSnapshot or VirtualMachineRestore from ``virtbus apply -f``."""
    if isinstance(asked, VMSnapshotCreate):
        view = await api.call("vmsnapshot", "create", asked, VMSnapshotView)
        say(f"virtualmachinesnapshot/{view.item.name} created ({view.phase.value})")
    else:
        say(f"virtualmachinerestore: {(await api.call('vmrestore', 'create', asked, Ack)).message}")


async def run_vm(api: ApiClient, args: argparse.Namespace) -> int:
    if args.vm_command == "clone":
        return await clonecmd.run_vm_clone(api, args)
    if args.vm_command == "restore" and args.to is not None:  # a new VM of the snapshot: a clone of it
        if args.node is not None:
            raise ApiError(Code.BAD_REQUEST, "--node moves the snapshot's own VM; a new VM's volumes are made "
                           "where the snapshot's were", "node")
        await clonecmd.clone_snapshot(api, args.snapshot, args.to, wait=args.wait, limit=args.timeout)
        return 0
    if args.vm_command == "restore":
        say((await api.call("vmrestore", "create", VMRestore(snapshot=args.snapshot, node=args.node), Ack)).message)
        if args.wait:
            view = await api.call("vmsnapshot", "get", NameRequest(name=args.snapshot), VMSnapshotView)
            for volume in sorted(view.item.volumes):
                await wait_volume(api, volume, args.timeout)
        return 0
    if args.vm == "list":
        views = (await api.call("vmsnapshot", "list", {}, VMSnapshotList)).items
        if args.output:
            say(render.structured(views, args.output))
            return 0
        say(render.table(["NAME", "VM", "PHASE", "VOLUMES", "AGE"],
                         [[v.item.name, v.item.vm, v.phase.value, ",".join(sorted(v.item.volumes)),
                           render.age(v.item.created_at)] for v in views]))
    elif args.vm == "get":
        say(render.structured(await api.call("vmsnapshot", "get", NameRequest(name=_target(args)), VMSnapshotView),
                              args.output or "yaml"))
    elif args.vm == "delete":
        say((await api.call("vmsnapshot", "delete", NameRequest(name=_target(args)), Ack)).message)
    else:
        deadline = None if args.failure_deadline is None else durations.parse(
            args.failure_deadline, "failure-deadline", at_most=MAX_FAILURE_DEADLINE_S)
        view = await api.call("vmsnapshot", "create",
                              VMSnapshotCreate(vm=args.vm, name=args.name, failure_deadline_s=deadline), VMSnapshotView)
        say(f"vmsnapshot/{view.item.name} of vm/{view.item.vm} asked: volumes {', '.join(sorted(view.item.volumes))}")
        if args.wait:
            for part in view.parts:
                await wait_snapshot(api, part.name, args.timeout)
    return 0
