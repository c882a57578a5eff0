"""``virtbus preference``: what a VM's ``spec.preference`` may name (KubeVirt's preferences)."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms
from ctl.client import ApiClient
from ctl.stdout import say
from proto.preferences import KINDS, Preference, PreferenceList, PreferenceReply


def add_parser(sub: Any) -> None:
    kubectlforms.add_verbs(sub, "preference", "defaults for VMs (spec.preference); apply -f adds your own")


def is_preference(kind: object) -> bool:
    return kind in KINDS


def _says(p: Preference) -> str:
    said = [f"disk bus {p.preferred_disk_bus}" if p.preferred_disk_bus else "",
            f"interface model {p.preferred_interface_model}" if p.preferred_interface_model else "",
            f"vCPUs as {p.preferred_cpu_topology}" if p.preferred_cpu_topology else "",
            f"grace {p.preferred_termination_grace_period_seconds}s"
            if p.preferred_termination_grace_period_seconds is not None else ""]
    return ", ".join(s for s in said if s) or "nothing"


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("preference", "apply", body, PreferenceReply)).item
    say(f"{item.kind.lower()}/{item.name} applied ({_says(item)})")


VERBS = kubectlforms.Verbs(
    "preference", PreferenceList, PreferenceReply, ["NAME", "PREFERS", "KIND"],
    rows=lambda items: [[p.name, _says(p), "common" if p.common else p.kind] for p in items])


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    return await kubectlforms.run_verbs(api, args, VERBS)
