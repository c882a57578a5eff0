"""``virtbus fip create|attach|detach|delete|list``: floating IPs, a provider network's address mapped 1:1
to a VM (OpenStack's floating IPs)."""

from __future__ import annotations

import argparse

from ctl import render
from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, FloatingIPList, FloatingIPRequest
from proto.state import FloatingIP


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    f = sub.add_parser("fip", help="floating IPs: a provider address mapped 1:1 to a VM")
    fsub = f.add_subparsers(dest="fip_command", required=True)
    fc = fsub.add_parser("create")
    fc.add_argument("address")
    fc.add_argument("--network", required=True)
    fa = fsub.add_parser("attach")
    fa.add_argument("address")
    fa.add_argument("kind", choices=["vm"])
    fa.add_argument("name")
    for verb in ("detach", "delete"):
        fsub.add_parser(verb).add_argument("address")
    fsub.add_parser("list")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    verb = args.fip_command
    if verb == "create":
        fip = await api.call("fip", "create", FloatingIPRequest(address=args.address, network=args.network), FloatingIP)
        say(f"floating IP {fip.address} created on network {fip.network}")
    elif verb == "attach":
        fip = await api.call("fip", "attach", FloatingIPRequest(address=args.address, vm=args.name), FloatingIP)
        say(f"floating IP {fip.address} attached to vm/{fip.vm}")
    elif verb == "list":
        items = (await api.call("fip", "list", {}, FloatingIPList)).items
        holder = [f.vm or (f"svc/{f.service}" if f.service else "<none>") for f in items]
        say(render.table(["ADDRESS", "NETWORK", "VM"], [[f.address, f.network, h] for f, h in zip(items, holder,
                                                                                                  strict=True)]))
    else:
        say((await api.call("fip", verb, FloatingIPRequest(address=args.address), Ack)).message)
    return 0
