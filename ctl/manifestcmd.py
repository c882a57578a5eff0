"""``virtbus apply -f FILE`` and ``virtbus delete -f FILE``: the objects of a manifest file (KubeVirt,
Kubernetes, Multus and OpenShift kinds, or virtbus JSON), each by its kind, as kubectl takes them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ctl import (
    clonecmd,
    instancetypecmd,
    kubevirtcmd,
    migratecmd,
    migrationpolicycmd,
    networkcmd,
    preferencecmd,
    priorityclasscmd,
    routecmd,
    servicecmd,
    snapshotcmd,
    workloadcmd,
)
from ctl.client import ApiClient
from ctl.stdout import say
from proto import (
    clonemanifest,
    clusterconfig,
    instancetypes,
    migrationpolicies,
    migrations,
    preferences,
    priorities,
    snapshotmanifest,
)
from proto.api import VMIReply, VMReply
from proto.errors import ApiError, Code
from proto.manifest import INSTANCE_KIND, load_manifests
from proto.state import restart_required

# what ``delete -f`` asks the API to delete, by the manifest's kind (a VM's manifest may have none:
# virtbus JSON); the rest of the kinds apply takes are refused there, each saying why
DELETE_BY_KIND: dict[str, str] = {
    "VirtualMachine": "vm", INSTANCE_KIND: "vmi",
    **{k: "network" for k in networkcmd.MANIFEST_KINDS},
    **{k: "instancetype" for k in instancetypes.KINDS}, **{k: "preference" for k in preferences.KINDS},
    **workloadcmd.API, **servicecmd.MANIFEST_KINDS, **routecmd.MANIFEST_KINDS,
    snapshotmanifest.SNAPSHOT_KIND: "vmsnapshot", clonemanifest.KIND: "vmclone", priorities.KIND: "priorityclass",
    migrations.KIND: "migration", migrationpolicies.KIND: "migrationpolicy",
}
NOT_DELETED = {
    snapshotmanifest.RESTORE_KIND: "a restore is done once it is applied; there is nothing left of it to delete",
    clusterconfig.KIND: "the KubeVirt CR is the cluster's configuration; apply it again to change it",
}


def _read(file: str) -> list[Any]:
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ApiError(Code.BAD_REQUEST, f"{file}: {exc.strerror or exc}", "filename") from None
    try:  # the API's loader: no aliases (billion laughs), bounded size and depth
        return load_manifests(data)
    except ApiError as exc:
        raise ApiError(exc.code, f"{file}: {exc.message}", exc.field) from None


# every kind ``apply -f`` takes; a virtbus JSON VM (apiVersion virtbus/v1) may name no kind
APPLIED_KINDS = sorted({*DELETE_BY_KIND, *NOT_DELETED})


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("apply", help="create or update from a KubeVirt YAML or virtbus JSON file")
    a.add_argument("-f", "--file", required=True)


async def cmd_apply(api: ApiClient, args: argparse.Namespace) -> int:
    """As kubectl apply -f: each object of the file by its kind, each failure said and the rest still
    applied; exit 1 if any failed."""
    failed = False
    for doc in _read(args.file):
        try:
            await _apply_one(api, doc)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def unknown_kind(doc: Any) -> ApiError | None:
    """Pure: the refusal of an object of a kind apply does not take, naming the kinds it does."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind is None or kind in APPLIED_KINDS:
        return None
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"{kind} {name}" if isinstance(name, str) and name else repr(kind)
    return ApiError(Code.BAD_REQUEST, f"{label} ({doc.get('apiVersion')}): virtbus has no such kind to apply; "
                                      f"it applies {', '.join(APPLIED_KINDS)}", "kind")


async def _apply_one(api: ApiClient, doc: Any) -> None:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    refusal = unknown_kind(doc)
    if refusal is not None:
        raise refusal
    body = json.dumps(doc, default=str).encode()  # YAML timestamps load as datetimes
    if kind in networkcmd.MANIFEST_KINDS:
        await networkcmd.apply(api, body)
    elif kind in snapshotmanifest.KINDS:
        await snapshotcmd.apply(api, snapshotmanifest.parse(doc))
    elif kind == clonemanifest.KIND:
        await clonecmd.apply(api, clonemanifest.parse(doc))
    elif instancetypecmd.is_instancetype(kind):
        await instancetypecmd.apply(api, body)
    elif kubevirtcmd.is_kubevirt(kind):
        await kubevirtcmd.apply(api, body)
    elif preferencecmd.is_preference(kind):
        await preferencecmd.apply(api, body)
    elif priorityclasscmd.is_priority_class(kind):
        await priorityclasscmd.apply(api, body)
    elif migratecmd.is_migration(kind):
        await migratecmd.apply(api, body)
    elif migrationpolicycmd.is_migration_policy(kind):
        await migrationpolicycmd.apply(api, body)
    elif workloadcmd.is_workload(kind):
        await workloadcmd.apply(api, str(kind), body)
    elif kind in servicecmd.MANIFEST_KINDS:
        await servicecmd.apply(api, kind, body)
    elif kind in routecmd.MANIFEST_KINDS:
        await routecmd.apply(api, kind, body)
    elif kind == INSTANCE_KIND:
        vmi = (await api.call("vmi", "apply", body, VMIReply)).item
        say(f"virtualmachineinstance/{vmi.name} applied ({vmi.phase.value})")
    else:
        vm = await api.call("vm", "apply", body, VMReply)
        later = "; its instance runs the spec it started with: restart it to apply the change" \
            if restart_required(vm.item.vm.spec, vm.item.vmi) else ""
        say(f"virtualmachine/{vm.item.vm.spec.name} applied ({vm.item.printable_status}){later}")


def deletions(docs: list[Any]) -> list[tuple[str, str] | ApiError]:
    """Pure: what ``delete -f`` deletes, (kind, name) for each object of the file, last first: a file
    applies what others need before them (a network before the VM on it), so they go after them. An
    object it cannot delete is its error, in its place."""
    out: list[tuple[str, str] | ApiError] = []
    for i, doc in enumerate(docs):
        where = f"document {i + 1}"
        if not isinstance(doc, dict):
            out.append(ApiError(Code.BAD_REQUEST, f"{where} is not an object"))
            continue
        kind = doc.get("kind") or "VirtualMachine"  # virtbus JSON names no kind: a VM
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else doc.get("name")  # virtbus JSON: name
        if kind in NOT_DELETED:
            label = f"{kind} {name}" if isinstance(name, str) and name else str(kind)
            out.append(ApiError(Code.BAD_REQUEST, f"{label}: {NOT_DELETED[kind]}", "kind"))
        elif kind not in DELETE_BY_KIND:
            out.append(ApiError(Code.BAD_REQUEST, f"{where}: virtbus has no kind {kind!r} to delete", "kind"))
        elif not isinstance(name, str) or not name:
            out.append(ApiError(Code.BAD_REQUEST, f"{where} ({kind}) has no metadata.name",
                                "metadata.name"))
        else:
            out.append((DELETE_BY_KIND[kind], name))
    return out[::-1]


async def cmd_delete_file(api: ApiClient, args: argparse.Namespace,
                          delete_one: Callable[[ApiClient, argparse.Namespace], Awaitable[int]]) -> int:
    """As kubectl delete -f: every object it can, waiting for each to be gone before the next (kubectl
    waits by default), each failure said and the rest still deleted; exit 1 if any failed. An object
    already gone is a failure too, unless --ignore-not-found."""
    failed = False
    for target in deletions(_read(args.file)):
        try:
            if isinstance(target, ApiError):
                raise target
            kind, name = target
            await delete_one(api, argparse.Namespace(command="delete", kind=kind, name=name, wait=True,
                                                     timeout=args.timeout, ignore_not_found=args.ignore_not_found))
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0
