"""``virtbus migrate NAME`` and ``virtbus migrate-cancel NAME`` (virtctl's), and the
VirtualMachineInstanceMigrations they make: ``get vmims``, ``get vmim NAME -o yaml``, ``delete vmim NAME``,
``apply -f`` of KubeVirt's manifest (proto.migrations)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ctl import kubectlforms, render
from ctl.client import ApiClient
from ctl.progress import wait_for
from ctl.stdout import say
from proto import migrations
from proto.api import Ack, NameRequest
from proto.errors import ApiError, Code
from proto.migrations import FINAL, Migration, MigrationCreate, MigrationList, MigrationReply
from proto.resources import object_list
from proto.state import MigrationPhase


def add_parser(sub: Any) -> None:
    m = sub.add_parser("migrate", help="move a running VM's guest to another node alive (virtctl migrate)")
    m.add_argument("name", help="the VM (its instance is what moves)")
    m.add_argument("--wait", action="store_true", help="wait until it has moved or failed, showing progress")
    m.add_argument("--timeout", type=float, default=300.0)
    c = sub.add_parser("migrate-cancel", help="cancel a VM's migration under way (virtctl migrate-cancel)")
    c.add_argument("name")
    kubectlforms.add_verbs(sub, "migration", "live migrations of VMs (VirtualMachineInstanceMigration)")


def is_migration(kind: object) -> bool:
    return kind == migrations.KIND


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("migration", "apply", body, MigrationReply)).item
    say(f"virtualmachineinstancemigration.kubevirt.io/{item.name} applied ({item.phase.value})")


def rows(items: list[Migration], now: float) -> list[list[str]]:
    """kubectl get vmims' columns, and where each went from and to."""
    return [[m.name, m.phase.value, m.vmi_name, m.source_node or "", m.target_node or "",
             render.age(m.created_at, now)] for m in items]


async def migrate(api: ApiClient, args: argparse.Namespace) -> int:
    item = (await api.call("migration", "create", MigrationCreate(vmi_name=args.name), MigrationReply)).item
    say(f"VM {args.name} was scheduled to migrate (migration {item.name})")
    if not args.wait:
        return 0

    async def probe() -> tuple[bool, str]:
        now = (await api.call("migration", "get", NameRequest(name=item.name), MigrationReply)).item
        where = f" to {now.target_node}" if now.target_node else ""
        if now.phase is MigrationPhase.FAILED:
            raise ApiError(Code.INVALID, f"migration {item.name} failed: {now.reason}")
        return now.phase in FINAL, f"{now.phase.value}{where}"

    await wait_for(f"migration of {args.name}", probe, args.timeout)
    return 0


async def cancel(api: ApiClient, args: argparse.Namespace) -> int:
    say((await api.call("migration", "cancel", NameRequest(name=args.name), Ack)).message)
    return 0


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.command == "migrate":
        return await migrate(api, args)
    if args.command == "migrate-cancel":
        return await cancel(api, args)
    return await kubectlforms.run_verbs(api, args, VERBS)


VERBS = kubectlforms.Verbs(
    "migration", MigrationList, MigrationReply, ["NAME", "PHASE", "VMI", "SOURCE", "TARGET", "AGE"],
    rows=lambda items: rows(items, time.time()),
    listed=lambda items: object_list([migrations.manifest(m) for m in items]), shown=migrations.manifest)
