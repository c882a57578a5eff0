"""``virtbus instancetype``: the sizes a VM's ``spec.instancetype`` may name (KubeVirt's instancetypes)."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms
from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import InstancetypeList, InstancetypeReply
from proto.instancetypes import KINDS


def add_parser(sub: Any) -> None:
    kubectlforms.add_verbs(sub, "instancetype", "sizes for VMs (spec.instancetype); apply -f adds your own")


def is_instancetype(kind: object) -> bool:
    return kind in KINDS


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("instancetype", "apply", body, InstancetypeReply)).item
    say(f"{item.kind.lower()}/{item.name} applied ({item.cpus} vCPU, {item.memory})")


VERBS = kubectlforms.Verbs(
    "instancetype", InstancetypeList, InstancetypeReply, ["NAME", "CPUS", "MEMORY", "KIND"],
    rows=lambda items: [[t.name, str(t.cpus), t.memory, "common" if t.common else t.kind] for t in items])


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    return await kubectlforms.run_verbs(api, args, VERBS)
