"""``virtbus priorityclass``: the PriorityClasses a VM's ``priorityClassName`` may name (proto.priorities);
``apply -f`` adds one, ``get priorityclasses`` lists them as kubectl does."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms, render
from ctl.client import ApiClient
from ctl.lab import say
from proto import priorities
from proto.api import Ack, NameRequest
from proto.priorities import PriorityClass, PriorityClassList, PriorityClassReply
from proto.resources import object_list


def add_parser(sub: Any) -> None:
    kubectlforms.add_verbs(sub, "priorityclass", "priorities for VMs (spec.template.spec.priorityClassName); "
                           "apply -f adds your own")


def is_priority_class(kind: object) -> bool:
    return kind == priorities.KIND


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("priorityclass", "apply", body, PriorityClassReply)).item
    say(f"priorityclass.scheduling.k8s.io/{item.name} applied (value {item.value})")


def rows(items: list[PriorityClass]) -> list[list[str]]:
    """kubectl get priorityclasses' columns."""
    return [[c.name, str(c.value), str(c.global_default).lower(), c.preemption_policy] for c in items]


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.priorityclass_command == "list":
        items = (await api.call("priorityclass", "list", {}, PriorityClassList)).items
        if args.output:
            say(render.structured(object_list([priorities.manifest(c) for c in items]), args.output))
            return 0
        say(render.table(["NAME", "VALUE", "GLOBAL-DEFAULT", "PREEMPTIONPOLICY"], rows(items)))
    elif args.priorityclass_command == "get":
        item = (await api.call("priorityclass", "get", NameRequest(name=args.name), PriorityClassReply)).item
        say(render.structured(priorities.manifest(item), args.output))
    else:
        say((await api.call("priorityclass", "delete", NameRequest(name=args.name), Ack)).message)
    return 0
