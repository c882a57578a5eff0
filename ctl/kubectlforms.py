"""kubectl's and virtctl's ways of naming what a command is for, sorted out before connecting: TYPE/NAME
(`get vm/testvm`, `delete svc/web`), delete's NAME (a VM) or KIND NAME, the kinds whose verbs live under
a command of their own (`get pvc` is `volume list`, `delete vmsnapshot S` is `vm snapshot delete S`),
get's -w and -l refused for the kinds that would take them and then ignore them, and kubectl's
-n/--namespace (and get's -A): virtbus has one namespace, which a command may name; any other is refused."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctl import kindnames, render
from ctl.stdout import say
from proto import selector
from proto.api import Ack, NameRequest
from proto.errors import ApiError, Code
from proto.schema import NAMESPACE, Namespace

if TYPE_CHECKING:
    from ctl.client import ApiClient


class Elsewhere:
    """A kind whose verbs live under a command of its own: the argv of its list, get and delete."""

    def __init__(self, command: list[str], get: bool = True, delete: bool = True) -> None:
        self.command, self.get, self.delete = command, get, delete


def add_verbs(sub: Any, command: str, summary: str) -> None:
    """``command list [-o json|yaml]``, ``command get NAME [-o json|yaml]`` and ``command delete NAME``: the
    verbs of a kind that lives under a command of its own (what ELSEWHERE's get and delete turn into);
    the verb in ``<command>_command``."""
    p = sub.add_parser(command, help=summary)
    verbs = p.add_subparsers(dest=f"{command}_command", required=True)
    verbs.add_parser("list").add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    get = verbs.add_parser("get")
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=["json", "yaml"], default="yaml")
    verbs.add_parser("delete").add_argument("name")


@dataclass(frozen=True)
class Verbs:
    """How ``add_verbs``'s verbs of a kind print: its API's list and get replies (``items``, ``item``),
    the table's columns, and what ``-o json|yaml`` prints of the list and of one (default: as the API
    says them)."""

    kind: str
    list_reply: type[Any]
    reply: type[Any]
    headers: list[str]
    rows: Callable[[list[Any]], list[list[str]]]
    listed: Callable[[list[Any]], object] = lambda items: items
    shown: Callable[[Any], object] = lambda item: item


async def run_verbs(api: ApiClient, args: argparse.Namespace, verbs: Verbs) -> int:
    """``add_verbs``'s list, get and delete, carried out."""
    command = getattr(args, f"{verbs.kind}_command")
    if command == "list":
        items = (await api.call(verbs.kind, "list", {}, verbs.list_reply)).items
        if args.output:
            say(render.structured(verbs.listed(items), args.output))
            return 0
        say(render.table(verbs.headers, verbs.rows(items)))
    elif command == "get":
        item = (await api.call(verbs.kind, "get", NameRequest(name=args.name), verbs.reply)).item
        say(render.structured(verbs.shown(item), args.output))
    else:
        say((await api.call(verbs.kind, "delete", NameRequest(name=args.name), Ack)).message)
    return 0


def _spellings(words: str, where: Elsewhere) -> dict[str, Elsewhere]:
    return dict.fromkeys(words.split(), where)


# as kubectl spells KubeVirt's, CDI's and Kubernetes' kinds (their short names too)
ELSEWHERE: dict[str, Elsewhere] = {
    **_spellings("instancetype instancetypes virtualmachineinstancetype virtualmachineinstancetypes vminstancetype "
                 "vminstancetypes vmf vmfs virtualmachineclusterinstancetype virtualmachineclusterinstancetypes "
                 "vmclusterinstancetype vmclusterinstancetypes vmcf vmcfs", Elsewhere(["instancetype"])),
    **_spellings("preference preferences virtualmachinepreference virtualmachinepreferences vmpref vmprefs vmps "
                 "virtualmachineclusterpreference virtualmachineclusterpreferences vmclusterpref vmclusterprefs "
                 "vmcp vmcps", Elsewhere(["preference"])),
    **_spellings("volume volumes pvc pvcs persistentvolumeclaim persistentvolumeclaims dv dvs datavolume "
                 "datavolumes", Elsewhere(["volume"])),
    **_spellings("vmsnapshot vmsnapshots virtualmachinesnapshot virtualmachinesnapshots vmsnap vmsnaps",
                 Elsewhere(["vm", "snapshot"])),
    **_spellings("volumesnapshot volumesnapshots vs", Elsewhere(["volume", "snapshot"])),
    **_spellings("vmclone vmclones virtualmachineclone virtualmachineclones", Elsewhere(["vm", "clone"])),
    **_spellings("priorityclass priorityclasses pc", Elsewhere(["priorityclass"])),
    **_spellings("vmim vmims virtualmachineinstancemigration virtualmachineinstancemigrations migration migrations",
                 Elsewhere(["migration"])),
    **_spellings("migrationpolicy migrationpolicies", Elsewhere(["migrationpolicy"])),
    **_spellings("image images", Elsewhere(["image"], get=False)),
    **_spellings("fip fips floatingip floatingips", Elsewhere(["fip"], get=False)),
}
DELETE_KINDS = ("vm", "vms", "vmi", "vmis", *sorted(kindnames.WORKLOADS), *kindnames.SERVICES, *kindnames.ROUTES,
                *kindnames.NETWORKS, *ELSEWHERE, "node", "nodes", "no")
KINDS = {"vm": "vm", "vms": "vm", "virtualmachine": "vm", "virtualmachines": "vm",
         "vmi": "vmi", "vmis": "vmi", "virtualmachineinstance": "vmi", "virtualmachineinstances": "vmi",
         "node": "node", "nodes": "node", "exposure": "exposure", "exposures": "exposure",
         "event": "event", "events": "event"}


def add_namespace_option(p: argparse.ArgumentParser) -> None:
    """kubectl's -n/--namespace, on a parser that has none yet."""
    if "-n" not in p._option_string_actions:
        # SUPPRESS: a command's own default does not hide the one given before it
        p.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                       help=f"kubectl's: virtbus has one namespace, {NAMESPACE!r}; any other is refused")


def add_namespace_options(parser: argparse.ArgumentParser) -> None:
    """kubectl's -n/--namespace on the CLI and on every command under it, where kubectl and virtctl
    users put it (`virtbus -n default get vms`, `virtbus start testvm -n default`). The lab's commands
    are virtbus's own and take none."""
    seen: set[int] = set()

    def add(p: argparse.ArgumentParser) -> None:
        if id(p) in seen or p.prog.split()[1:2] == ["lab"]:
            return
        seen.add(id(p))
        add_namespace_option(p)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    add(child)

    add(parser)


def normalize(args: argparse.Namespace, parse: Callable[[list[str]], argparse.Namespace]) -> argparse.Namespace:
    """The arguments as the command that does it takes them (parse: the CLI's, for those whose verbs
    live under a command of their own)."""
    if getattr(args, "namespace", None) is not None:
        Namespace().walk(args.namespace, "namespace")
    if args.command == "get":
        if args.name is None and "/" in args.kind:
            args.kind, _, args.name = args.kind.partition("/")
        if args.watch and KINDS.get(args.kind.lower()) not in ("vm", "vmi", "event"):
            raise ApiError(Code.BAD_REQUEST, "-w watches vms, vmis and events", "watch")
        if args.selector and KINDS.get(args.kind.lower()) not in ("vm", "vmi"):
            raise ApiError(Code.BAD_REQUEST, "-l selects vms and vmis only", "selector")
        if args.selector:
            selector.parse_text(args.selector, "selector")  # a malformed one costs no connection
        where = ELSEWHERE.get(args.kind.lower())
        if where is not None:
            if args.name is not None and not where.get:
                raise ApiError(Code.BAD_REQUEST, f"{args.kind} has no get; list them: get {args.kind}", "name")
            if args.output not in (None, "json", "yaml"):
                raise ApiError(Code.BAD_REQUEST, f"{args.kind} prints as json or yaml (virtbus's own objects)",
                               "output")
            verb = ["get", args.name] if args.name is not None else ["list"]
            return _elsewhere(parse, args, [*where.command, *verb, *(["-o", args.output] if args.output else [])])
    elif args.command == "describe":
        if args.name is None and "/" in args.kind:
            args.kind, _, args.name = args.kind.partition("/")
        if not args.name:
            raise ApiError(Code.BAD_REQUEST, "describe takes KIND NAME or KIND/NAME", "name")
    elif args.command == "port-forward":  # what it names checked before connecting
        from ctl import portforward  # here: no other command needs its tunnels

        portforward.target_name(args.target)
        for pair in args.ports:
            portforward.port_pair(pair)
    elif args.command == "delete":
        args.kind, args.name = _delete_target(args)
        where = ELSEWHERE.get(args.kind.lower()) if args.kind is not None else None
        if where is not None and args.name is not None:
            return _elsewhere(parse, args, [*where.command, "delete", args.name])
    return args


def _elsewhere(parse: Callable[[list[str]], argparse.Namespace], args: argparse.Namespace,
               argv: list[str]) -> argparse.Namespace:
    """The command that does it, with the CLI's own options as given (--server, --creds): parsed
    afresh, they would be their defaults, and `get vmsnapshots --server URL` would ask another bus."""
    again = parse(argv)
    for option in ("server", "creds"):
        setattr(again, option, getattr(args, option))
    return again


def _delete_target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """delete's NAME (a VM), KIND NAME or KIND/NAME, as kubectl and virtctl take them; or -f FILE."""
    given = [a for a in (args.kind, args.name) if a is not None]
    if args.file is not None:
        if given:
            raise ApiError(Code.BAD_REQUEST, "give -f FILE or what to delete, not both", "filename")
        return None, None
    if not given:
        raise ApiError(Code.BAD_REQUEST, "delete takes NAME (a VM), KIND NAME, KIND/NAME or -f FILE", "name")
    if len(given) == 2:
        kind, name = given
        if "/" in name:
            raise ApiError(Code.BAD_REQUEST, "give the kind once: KIND NAME or KIND/NAME", "name")
    elif "/" in given[0]:
        kind, _, name = given[0].partition("/")
    elif given[0] in DELETE_KINDS:
        raise ApiError(Code.BAD_REQUEST, f"delete {given[0]} needs a NAME", "name")
    else:
        kind, name = "vm", given[0]
    kind = kind.lower()  # kubectl's kinds are its resources' names, in any case
    if KINDS.get(kind) in ("vm", "vmi"):  # virtualmachine(s), virtualmachineinstance(s) as vm, vmi
        kind = KINDS[kind]
    if kind in ("nodes", "no"):
        kind = "node"
    if kind not in DELETE_KINDS:
        raise ApiError(Code.BAD_REQUEST, f"delete takes {', '.join(DELETE_KINDS)}; not {kind!r}", "kind")
    return kind, name
