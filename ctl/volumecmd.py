"""``virtbus volume``: disks that outlive every run (KubeVirt's PVCs and DataVolumes)."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import render, snapshotcmd
from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, NameRequest, VolumeCreate, VolumeList, VolumeReply, VolumeResize


def add_parser(sub: Any) -> None:
    v = sub.add_parser("volume", help="volumes: disks that outlive every run (PVCs, DataVolumes)")
    vsub = v.add_subparsers(dest="volume_command", required=True)
    vc = vsub.add_parser("create")
    vc.add_argument("name")
    vc.add_argument("--size", required=True, help="e.g. 2Gi")
    vc.add_argument("--from-image", default=None, help="its first content: an image of the image store")
    vc.add_argument("--node", default=None, help="the node it lives on; else the first VM's")
    vc.add_argument("--wait", action="store_true", help="with --node: wait until populated, showing progress")
    vc.add_argument("--timeout", type=float, default=1800.0)
    for verb in ("list", "get"):
        vl = vsub.add_parser(verb)
        if verb == "get":
            vl.add_argument("name")
        vl.add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    vsub.add_parser("delete").add_argument("name")
    vr = vsub.add_parser("resize", help="grow it; a running guest sees it at once, a stopped VM's at its next start")
    vr.add_argument("name")
    vr.add_argument("--size", required=True)
    snapshotcmd.add_volume_parsers(vsub)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    """Volumes: disks that outlive every run (KubeVirt's PVCs and DataVolumes)."""
    if args.volume_command == "create":
        made = (await api.call("volume", "create", VolumeCreate(name=args.name, size=args.size, image=args.from_image,
                                                                node=args.node), VolumeReply)).item
        where = f"on node {made.node} now" if made.node else "on the node of the first VM that uses it, then"
        say(f"volume/{made.name} created ({made.size}{', from ' + made.image if made.image else ', blank'}); "
            f"its file is made {where}")
        if args.wait and made.node:
            await snapshotcmd.wait_volume(api, made.name, args.timeout)
    elif args.volume_command == "snapshot":
        return await snapshotcmd.volume_snapshot(api, args)
    elif args.volume_command == "restore":
        return await snapshotcmd.volume_restore(api, args)
    elif args.volume_command == "list":
        items = (await api.call("volume", "list", {}, VolumeList)).items
        if args.output:
            say(render.structured(items, args.output))
            return 0
        say(render.table(["NAME", "SIZE", "NODE", "PHASE", "SOURCE", "OWNER", "AGE"],
                         [[v.name, v.size, v.node or "<first consumer>", snapshotcmd.volume_state(v),
                           f"snapshot/{v.snapshot}" if v.snapshot else v.image or "<blank>", v.owner_vm or "",
                           render.age(v.created_at)] for v in items]))
    elif args.volume_command == "get":
        item = (await api.call("volume", "get", NameRequest(name=args.name), VolumeReply)).item
        say(render.structured(item, args.output or "yaml"))
    elif args.volume_command == "resize":
        say((await api.call("volume", "resize", VolumeResize(name=args.name, size=args.size), VolumeReply)).message)
    else:
        say((await api.call("volume", "delete", NameRequest(name=args.name), Ack)).message)
    return 0
