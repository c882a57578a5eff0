"""``virtbus get KIND [NAME]``: kubectl's get of every kind virtbus keeps, as a table, -o json|yaml|wide|name
or jsonpath, one object or a list (-l: by labels), or followed (-w) as they change."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kindnames, kubectlforms, render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import clusterconfig, selector
from proto.api import ExposureList, NameRequest, NodeList, SelectRequest, VMIList, VMIReply, VMList, VMReply, VMView
from proto.errors import ApiError, Code
from proto.state import VMI


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    g = sub.add_parser("get", help="list or show vms, vmis, nodes")
    g.add_argument("kind")
    g.add_argument("name", nargs="?")
    g.add_argument("-o", "--output", type=render.output_format, default=None,
                   help="json, yaml, wide, name or jsonpath=TEMPLATE (kubectl's)")
    g.add_argument("-w", "--watch", action="store_true", help="vms, vmis, events: keep printing changes")
    g.add_argument("-l", "--selector", default="", help="vms, vmis: those whose labels it picks (app=web,tier!=db)")
    g.add_argument("-A", "--all-namespaces", action="store_true",
                   help="kubectl's: every namespace, which is the one there is")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    # each kind's module imported for its kind only: `get vms` waits for none of the others (ctl.commands)
    spelled = args.kind.lower()
    if spelled in kindnames.WORKLOADS:
        from ctl import workloadcmd

        await workloadcmd.get(api, kindnames.WORKLOADS[spelled], args.name, args.output)
        return 0
    if spelled in kindnames.SERVICES:
        from ctl import servicecmd

        await servicecmd.get(api, kindnames.SERVICES[spelled], args.name, args.output)
        return 0
    if spelled in kindnames.ROUTES:
        from ctl import routecmd

        await routecmd.get(api, kindnames.ROUTES[spelled], args.name, args.output)
        return 0
    if spelled in clusterconfig.KINDS:
        from ctl import kubevirtcmd

        await kubevirtcmd.get(api, args.name, args.output)
        return 0
    if spelled in kindnames.NETWORKS:
        from ctl import networkcmd

        await networkcmd.get(api, args.name, args.output)
        return 0
    kind = kubectlforms.KINDS.get(spelled)
    if kind is None:
        raise ApiError(Code.BAD_REQUEST, f"unknown kind {args.kind!r}; use vms, vmis, vmirs, vmpools, services, "
                                         "endpoints, routes, ingresses, net-attach-defs, pvcs, vmsnapshots, "
                                         "volumesnapshots, instancetypes, preferences, priorityclasses, vmims, "
                                         "migrationpolicies, images, "
                                         "fips, nodes, exposures, events or kubevirt", "kind")
    if kind == "event":
        say(render.table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], []))
        await api.events(args.watch, lambda e: say(render.event_row(e)))
        return 0
    wide = args.output == "wide"
    structured = render.is_structured(args.output)
    chosen = _selector(args)
    if args.watch:
        from ctl import watches

        watch = watches.vms if kind == "vm" else watches.vmis
        await watch(api, args.name, chosen, args.output if structured else None, wide)
        return 0
    picked = SelectRequest(label_selector=args.selector)
    one = bool(args.name)
    if kind == "vm":
        vms: list[VMView] = await _items(api, "vm", args.name, picked, VMReply, VMList)
        say(render.vm_objects(vms, args.output, one=one) if structured else render.vms(vms, wide))
    elif kind == "vmi":
        vmis: list[VMI] = await _items(api, "vmi", args.name, picked, VMIReply, VMIList)
        say(render.vmi_objects(vmis, args.output, one=one) if structured else render.vmis(vmis, wide))
    elif kind == "exposure":
        exposures = (await api.call("exposure", "list", {}, ExposureList)).items
        say(render.structured(exposures, args.output) if structured else render.table(
            ["VM", "PORT", "PROTOCOL", "NODEPORT"],
            [[e.vm, str(e.port), e.protocol, str(e.node_port)]
             for e in exposures if not args.name or e.vm == args.name]))
    else:
        nodes = (await api.call("node", "list", {}, NodeList)).items
        if args.name:
            nodes = [n for n in nodes if n.node.name == args.name]
            if not nodes:
                raise ApiError(Code.NOT_FOUND, f"node {args.name!r} not found")
        say(render.node_objects(nodes, args.output, one=one) if structured
            else render.nodes(nodes, wide))
    return 0


async def _items(api: ApiClient, kind: str, name: str | None, picked: SelectRequest, reply: type[Any],
                 listed: type[Any]) -> list[Any]:
    """The one object named, or every one the selector picks."""
    if name:
        return [(await api.call(kind, "get", NameRequest(name=name), reply)).item]
    return list((await api.call(kind, "list", picked, listed)).items)


def _selector(args: argparse.Namespace) -> selector.LabelSelector:
    """`-l` as kubectl takes it: for lists of vms and vmis (kubectlforms.normalize has checked the kind), never
    beside a name."""
    if not args.selector:
        return selector.LabelSelector()
    if args.name:
        raise ApiError(Code.BAD_REQUEST, "a name cannot be given with a selector (-l)", "selector")
    return selector.parse_text(args.selector, "selector")
