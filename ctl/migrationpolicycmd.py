"""``virtbus migrationpolicy``: KubeVirt's MigrationPolicies (proto.migrationpolicies); ``apply -f`` adds
one, ``get migrationpolicies`` lists them as kubectl does."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kubectlforms
from ctl.client import ApiClient
from ctl.stdout import say
from proto import migrationpolicies
from proto.migrationpolicies import MigrationPolicy, MigrationPolicyList, MigrationPolicyReply
from proto.quantity import format_bytes
from proto.resources import object_list


def add_parser(sub: Any) -> None:
    kubectlforms.add_verbs(sub, "migrationpolicy", "live-migration settings for the VMIs a policy selects "
                           "(migrations.kubevirt.io MigrationPolicy); apply -f adds one")


def is_migration_policy(kind: object) -> bool:
    return kind == migrationpolicies.KIND


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("migrationpolicy", "apply", body, MigrationPolicyReply)).item
    say(f"migrationpolicy.migrations.kubevirt.io/{item.name} applied")


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def rows(items: list[MigrationPolicy]) -> list[list[str]]:
    """The name, what it selects and what it sets (kubectl's columns for a CRD are its name and age)."""
    def bandwidth(p: MigrationPolicy) -> str:
        b = p.bandwidth_per_migration
        return "-" if b is None else (format_bytes(b) if b else "0Mi")
    return [[p.name, _selector(p.vmi_selector), _selector(p.namespace_selector), bandwidth(p),
             "-" if p.completion_timeout_per_gib is None else str(p.completion_timeout_per_gib),
             "-" if p.allow_auto_converge is None else str(p.allow_auto_converge).lower()] for p in items]


VERBS = kubectlforms.Verbs(
    "migrationpolicy", MigrationPolicyList, MigrationPolicyReply,
    ["NAME", "VMI-SELECTOR", "NAMESPACE-SELECTOR", "BANDWIDTH", "TIMEOUT-PER-GIB", "AUTO-CONVERGE"],
    rows=rows, listed=lambda items: object_list([migrationpolicies.manifest(p) for p in items]),
    shown=migrationpolicies.manifest)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    return await kubectlforms.run_verbs(api, args, VERBS)
