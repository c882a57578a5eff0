"""``virtbus instancetype``: the sizes a VM's ``spec.instancetype`` may name (KubeVirt's instancetypes)."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms, render
from ctl.client import ApiClient
from ctl.lab import say
from proto.api import Ack, InstancetypeList, InstancetypeReply, NameRequest
from proto.instancetypes import KINDS


def add_parser(sub: Any) -> None:
    kubectlforms.add_verbs(sub, "instancetype", "sizes for VMs (spec.instancetype); apply -f adds your own")


def is_instancetype(kind: object) -> bool:
    return kind in KINDS


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("instancetype", "apply", body, InstancetypeReply)).item
    say(f"{item.kind.lower()}/{item.name} applied ({item.cpus} vCPU, {item.memory})")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.instancetype_command == "list":
        items = (await api.call("instancetype", "list", {}, InstancetypeList)).items
        if args.output:
            say(render.structured(items, args.output))
            return 0
        say(render.table(["NAME", "CPUS", "MEMORY", "KIND"],
                         [[t.name, str(t.cpus), t.memory, "common" if t.common else t.kind] for t in items]))
    elif args.instancetype_command == "get":
        item = (await api.call("instancetype", "get", NameRequest(name=args.name), InstancetypeReply)).item
        say(render.structured(item, args.output))
    else:
        say((await api.call("instancetype", "delete", NameRequest(name=args.name), Ack)).message)
    return 0
