"""``virtbus priorityclass``: the PriorityClasses a VM's ``priorityClassName`` may name (proto.priorities);
``apply -f`` adds one, ``get priorityclasses`` lists them as kubectl does."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms
from ctl.client import ApiClient
from ctl.stdout import say
from proto import priorities
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


VERBS = kubectlforms.Verbs(
    "priorityclass", PriorityClassList, PriorityClassReply, ["NAME", "VALUE", "GLOBAL-DEFAULT", "PREEMPTIONPOLICY"],
    rows=rows, listed=lambda items: object_list([priorities.manifest(c) for c in items]), shown=priorities.manifest)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    return await kubectlforms.run_verbs(api, args, VERBS)
