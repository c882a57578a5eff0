"""``virtbus vm clone`` and ``virtbus create clone``: KubeVirt's VirtualMachineClone. The first asks
the API for a clone (and with --wait follows it to its end); the second prints the manifest
``virtctl create clone`` prints, for ``virtbus apply -f -``."""

from __future__ import annotations

import argparse
import secrets
import string
from typing import Any

import yaml

from ctl import render
from ctl.client import ApiClient
from ctl.progress import wait_for
from ctl.stdout import say
from proto import clonemanifest
from proto.api import Ack, NameRequest
from proto.clones import (
    FINAL,
    PREFIX_TARGET_NAME,
    RANDOMIZE_NAMES,
    SOURCE_SNAPSHOT,
    SOURCE_VM,
    CloneCreate,
    CloneList,
    ClonePhase,
    CloneReply,
    VMClone,
)
from proto.errors import ApiError, Code
from proto.workloads import generate_name

VERBS = ("list", "get", "delete")
# virtctl create clone's --source-type / --target-type spellings
_TYPES = {**dict.fromkeys(("vm", "VM", "VirtualMachine", "virtualmachine"), SOURCE_VM),
          **dict.fromkeys(("snapshot", "vmsnapshot", "VirtualMachineSnapshot", "virtualmachinesnapshot"),
                          SOURCE_SNAPSHOT)}


def _identity_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-filter", action="append", default=None, dest="label_filters",
                   help="the VM labels to keep: characters, '.', '*' as in a regular expression; "
                        "!F drops; default: all")
    p.add_argument("--annotation-filter", action="append", default=None, dest="annotation_filters")
    p.add_argument("--template-label-filter", action="append", default=None, dest="template_label_filters",
                   help="likewise for the labels its instances carry")
    p.add_argument("--new-mac-address", action="append", default=[], dest="macs", metavar="IFACE:MAC",
                   help="an interface's MAC address; the rest get new ones")
    p.add_argument("--new-smbios-serial", default=None, help="the clone's SMBIOS serial; default: none")


def add_vm_parser(vsub: Any) -> None:
    c = vsub.add_parser("clone", help="a new VM from a VM (or a VM snapshot), with copies of its volumes; "
                                      "or: clone list|get NAME|delete NAME")
    c.add_argument("source", help="the VM (or list, get, delete)")
    c.add_argument("clone", nargs="?", help="with get|delete: the clone")
    c.add_argument("--to", default=None, dest="target", help="the new VM's name (default: clone-<source>-<random>)")
    c.add_argument("--name", default=None, help="the clone's name (default: clone-<random>)")
    c.add_argument("--from-snapshot", action="store_true", help="the source is a VM snapshot, not a VM")
    c.add_argument("--volume-name-policy", choices=[RANDOMIZE_NAMES, PREFIX_TARGET_NAME], default=RANDOMIZE_NAMES,
                   help="the copies' names: restore-<random>-<volume>, or <target>-<volume>")
    _identity_flags(c)
    c.add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    c.add_argument("--wait", action="store_true", help="wait until the clone has Succeeded, showing each phase")
    c.add_argument("--timeout", type=float, default=1800.0)


def add_create_parser(csub: Any) -> None:
    c = csub.add_parser("clone", help="a VirtualMachineClone manifest, printed (virtctl create clone)")
    c.add_argument("--name", default=None, help="default: clone-<5 random letters>")
    c.add_argument("--source-name", required=True)
    c.add_argument("--source-type", default="vm", choices=sorted(_TYPES))
    c.add_argument("--target-name", default=None, help="default: clone-<source>-<random>, chosen by the API")
    c.add_argument("--target-type", default="vm", choices=sorted(k for k, v in _TYPES.items() if v == SOURCE_VM))
    c.add_argument("--template-annotation-filter", action="append", default=None,
                   help="accepted: virtbus keeps no template annotations, so there is nothing to filter")
    _identity_flags(c)


def _macs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        iface, sep, mac = pair.partition(":")
        if not sep or not iface or not mac:
            raise ApiError(Code.BAD_REQUEST, f"--new-mac-address {pair!r} is IFACE:MAC", "new-mac-address")
        out[iface] = mac
    return out


def _random_name() -> str:
    return "clone-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))


def request(args: argparse.Namespace, *, source: str, kind: str, target: str | None, policy: str) -> CloneCreate:
    return CloneCreate(name=args.name or _random_name(), source=source, source_kind=kind, target=target,
                       label_filters=args.label_filters, annotation_filters=args.annotation_filters,
                       template_label_filters=args.template_label_filters, new_mac_addresses=_macs(args.macs),
                       new_smbios_serial=args.new_smbios_serial, volume_name_policy=policy)


def create_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """What ``virtbus create clone`` prints, read back by the reader ``apply -f`` uses first."""
    req = request(args, source=args.source_name, kind=_TYPES[args.source_type], target=args.target_name,
                  policy=RANDOMIZE_NAMES)
    doc = clonemanifest.manifest(req)
    if args.template_annotation_filter is not None:
        doc["spec"].setdefault("template", {})["annotationFilters"] = args.template_annotation_filter
    clonemanifest.parse(doc)
    return doc


def run_create(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(create_manifest(args), sort_keys=False), end="")
    return 0


def state(clone: VMClone) -> str:
    return (clone.phase.value or "Pending") + (f": {clone.reason}" if clone.reason else "")


async def apply(api: ApiClient, req: CloneCreate) -> VMClone:
    clone = (await api.call("vmclone", "create", req, CloneReply)).item
    say(f"virtualmachineclone/{clone.name} created: vm/{clone.source} -> vm/{clone.target}"
        if clone.source_kind == SOURCE_VM else
        f"virtualmachineclone/{clone.name} created: vmsnapshot/{clone.source} -> vm/{clone.target}")
    return clone


async def wait_clone(api: ApiClient, made: VMClone, limit: float) -> None:
    """Each phase of the clone until it has Succeeded; then how to start its VM."""
    name = made.name

    async def probe() -> tuple[bool, str]:
        clone = (await api.call("vmclone", "get", NameRequest(name=name), CloneReply)).item
        if clone.phase is ClonePhase.FAILED:
            raise ApiError(Code.INVALID, f"clone {name} failed: {clone.reason}")
        return clone.phase in FINAL, state(clone)

    await wait_for(f"vmclone/{name}", probe, limit)
    say(f"vm/{made.target} is ready; start it with: virtbus start {made.target}")


async def clone_snapshot(api: ApiClient, snapshot: str, target: str, *, wait: bool, limit: float) -> None:
    """``virtbus vm restore S --to NEW``: KubeVirt's restore to a new VM, which is a clone of S."""
    req = CloneCreate(name=generate_name(f"restore-{target}"), source=snapshot, source_kind=SOURCE_SNAPSHOT,
                      target=target)
    clone = await apply(api, req)
    if wait:
        await wait_clone(api, clone, limit)


def _named(args: argparse.Namespace) -> str:
    if not args.clone:
        raise ApiError(Code.BAD_REQUEST, f"vm clone {args.source} needs a clone's name")
    return str(args.clone)


async def run_vm_clone(api: ApiClient, args: argparse.Namespace) -> int:
    if args.source == "list":
        items = (await api.call("vmclone", "list", {}, CloneList)).items
        if args.output:
            say(render.structured(items, args.output))
            return 0
        say(render.table(["NAME", "SOURCE", "TARGET", "PHASE", "AGE"],
                         [[c.name, c.source, c.target, state(c), render.age(c.created_at)] for c in items]))
    elif args.source == "get":
        item = (await api.call("vmclone", "get", NameRequest(name=_named(args)), CloneReply)).item
        say(render.structured(item, args.output or "yaml"))
    elif args.source == "delete":
        say((await api.call("vmclone", "delete", NameRequest(name=_named(args)), Ack)).message)
    else:
        req = request(args, source=args.source, kind=SOURCE_SNAPSHOT if args.from_snapshot else SOURCE_VM,
                      target=args.target, policy=args.volume_name_policy)
        clone = await apply(api, req)
        if args.wait:
            await wait_clone(api, clone, args.timeout)
    return 0
