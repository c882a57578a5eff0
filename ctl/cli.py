"""``virtbus``: the command line, virtctl/kubectl style. Every verb is a NATS request anyone can send."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import sys
from collections.abc import Awaitable, Callable

import ctl.vnc
import ctl.webconsole
from ctl import (
    console,
    consolelog,
    createvm,
    describe,
    draincmd,
    expandcmd,
    exportcmd,
    hotplugcmd,
    imagecmd,
    imageupload,
    instancetypecmd,
    kubectlforms,
    kubevirtcmd,
    lifecyclecmd,
    manifestcmd,
    migratecmd,
    migrationpolicycmd,
    networkcmd,
    nodemarks,
    portforward,
    power,
    preferencecmd,
    priorityclasscmd,
    render,
    routecmd,
    servicecmd,
    snapshotcmd,
    sshcmd,
    version,
    volumecmd,
    watches,
    workloadcmd,
)
from ctl.client import ApiClient, default_url
from ctl.lab import say
from proto import selector
from proto.api import (
    Ack,
    ExposeRequest,
    ExposureList,
    FloatingIPList,
    FloatingIPRequest,
    NameRequest,
    NodeList,
    SelectRequest,
    UnexposeRequest,
    VMIList,
    VMIReply,
    VMList,
    VMReply,
)
from proto.errors import ApiError, Code
from proto.state import Exposure, FloatingIP


async def cmd_get(api: ApiClient, args: argparse.Namespace) -> int:
    workload = workloadcmd.kind_of(args.kind)
    if workload is not None:
        await workloadcmd.get(api, workload, args.name, args.output)
        return 0
    if args.kind.lower() in servicecmd.KINDS:
        await servicecmd.get(api, servicecmd.KINDS[args.kind.lower()], args.name, args.output)
        return 0
    if args.kind.lower() in routecmd.KINDS:
        await routecmd.get(api, routecmd.KINDS[args.kind.lower()], args.name, args.output)
        return 0
    if args.kind.lower() in kubevirtcmd.KINDS:
        await kubevirtcmd.get(api, args.name, args.output)
        return 0
    if args.kind.lower() in networkcmd.KINDS:
        await networkcmd.get(api, args.name, args.output)
        return 0
    kind = kubectlforms.KINDS.get(args.kind.lower())
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
        watch = watches.vms if kind == "vm" else watches.vmis
        await watch(api, args.name, chosen, args.output if structured else None, wide)
        return 0
    picked = SelectRequest(label_selector=args.selector)
    if kind == "vm":
        if args.name:
            item = (await api.call("vm", "get", NameRequest(name=args.name), VMReply)).item
            say(render.vm_objects([item], args.output, one=True) if structured else render.vms([item], wide))
        else:
            items = (await api.call("vm", "list", picked, VMList)).items
            say(render.vm_objects(items, args.output) if structured else render.vms(items, wide))
    elif kind == "vmi":
        if args.name:
            vmi = (await api.call("vmi", "get", NameRequest(name=args.name), VMIReply)).item
            say(render.vmi_objects([vmi], args.output, one=True) if structured else render.vmis([vmi], wide))
        else:
            vmis = (await api.call("vmi", "list", picked, VMIList)).items
            say(render.vmi_objects(vmis, args.output) if structured else render.vmis(vmis, wide))
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
        say(render.node_objects(nodes, args.output, one=bool(args.name)) if structured
            else render.nodes(nodes, wide))
    return 0


def _selector(args: argparse.Namespace) -> selector.LabelSelector:
    """`-l` as kubectl takes it: for lists of vms and vmis (cmd_get has checked the kind), never beside a name."""
    if not args.selector:
        return selector.LabelSelector()
    if args.name:
        raise ApiError(Code.BAD_REQUEST, "a name cannot be given with a selector (-l)", "selector")
    return selector.parse_text(args.selector, "selector")


async def cmd_console(api: ApiClient, args: argparse.Namespace) -> int:
    if args.send is not None:
        await console.send(api, args.name, args.send)
        return 0
    if not args.log:
        return await console.interactive(api, args.name)
    if not args.until:
        sys.stdout.buffer.write(await api.console_log(args.name))
        sys.stdout.flush()
        return 0

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

    await consolelog.follow(api, args.name, args.until, args.timeout, write)
    return 0


async def cmd_expose(api: ApiClient, args: argparse.Namespace) -> int:
    if args.command == "expose" and args.service_name:
        await servicecmd.expose(api, args)
        return 0
    if args.kind != "vm":
        raise ApiError(Code.INVALID, f"a {args.kind} is exposed as a Service: give --name SVC", "name")
    if args.command == "expose":
        e = await api.call("vm", "expose", ExposeRequest(name=args.name, port=args.port, node_port=args.node_port,
                                                         protocol=args.protocol), Exposure)
        say(f"vm/{e.vm} {e.protocol} port {e.port} exposed on node port {e.node_port} of its node")
    else:
        request = UnexposeRequest(name=args.name, port=args.port, protocol=args.protocol)
        say((await api.call("vm", "unexpose", request, Ack)).message)
    return 0


async def cmd_fip(api: ApiClient, args: argparse.Namespace) -> int:
    verb = args.fip_command
    if verb == "create":
        fip = await api.call("fip", "create", FloatingIPRequest(address=args.address, network=args.network), FloatingIP)
        say(f"floating IP {fip.address} created on network {fip.network}")
    elif verb == "attach":
        fip = await api.call("fip", "attach", FloatingIPRequest(address=args.address, vm=args.name), FloatingIP)
        say(f"floating IP {fip.address} attached to vm/{fip.vm}")
    elif verb == "list":
        items = (await api.call("fip", "list", {}, FloatingIPList)).items
        holder = [f.vm or (f"svc/{f.service}" if f.service else "<none>") for f in items]
        say(render.table(["ADDRESS", "NETWORK", "VM"], [[f.address, f.network, h] for f, h in zip(items, holder,
                                                                                                  strict=True)]))
    else:
        say((await api.call("fip", verb, FloatingIPRequest(address=args.address), Ack)).message)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virtbus", description="Run KubeVirt VMs on a NATS-driven cluster.")
    p.add_argument("--server", "-s", default=default_url(), help="NATS URL (env NATS_URL)")
    p.add_argument("--creds", default=None,
                   help="nkey seed file to authenticate with (env NATS_CREDS; default: the lab's admin)")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", help="create or update from a KubeVirt YAML or virtbus JSON file")
    a.add_argument("-f", "--file", required=True)
    g = sub.add_parser("get", help="list or show vms, vmis, nodes")
    g.add_argument("kind")
    g.add_argument("name", nargs="?")
    g.add_argument("-o", "--output", type=render.output_format, default=None,
                   help="json, yaml, wide, name or jsonpath=TEMPLATE (kubectl's)")
    g.add_argument("-w", "--watch", action="store_true", help="vms, vmis, events: keep printing changes")
    g.add_argument("-l", "--selector", default="", help="vms, vmis: those whose labels it picks (app=web,tier!=db)")
    for verb in ("start", "stop", "restart", "delete"):
        c = sub.add_parser(verb, help=f"{verb} a VM" + (" (or KIND NAME, KIND/NAME, -f FILE)" if verb == "delete"
                                                          else ""))
        if verb == "delete":  # kind and name are sorted out by kubectl_forms: NAME, KIND NAME, KIND/NAME
            c.add_argument("kind", nargs="?", default=None,
                           help="vm (the default), vmi, vmirs, vmpool, service, endpoints, route, ingress, node, "
                                "net-attach-def, in kubectl's spellings too")
            c.add_argument("name", nargs="?", default=None)
            c.add_argument("-f", "--filename", dest="file", default=None,
                           help="every object of this manifest file (- for stdin), last first, as kubectl")
            c.add_argument("--ignore-not-found", action="store_true", help="an object already gone is no error")
        else:
            c.add_argument("name")
        if verb == "start":
            c.add_argument("--paused", action="store_true", help="its guest paused before it first runs (unpause)")
        if verb in ("stop", "restart"):  # virtctl's: both or neither
            c.add_argument("--force", action="store_true", help="with --grace-period: cut the guest's time short")
            c.add_argument("--grace-period", type=int, default=None,
                           help="with --force: seconds the guest has to power off (0: destroyed at once)")
        c.add_argument("--wait", action="store_true", help="wait until done, showing progress")
        c.add_argument("--timeout", type=float, default=300.0)
    power.add_parsers(sub)
    c = sub.add_parser("console", help="a VM's serial console")
    c.add_argument("name")
    c.add_argument("--log", action="store_true", help="print the serial log so far")
    c.add_argument("--until", help="with --log: keep printing until this text appears")
    c.add_argument("--send", default=None, help="type this text (backslash escapes like \\n work) and leave")
    c.add_argument("--timeout", type=float, default=300.0)
    for verb in ("expose", "unexpose"):
        e = sub.add_parser(verb, help=f"{verb} a VM's port: as a Service (--name, virtctl expose), or on a node "
                                      "port of its node (DNAT node:N -> pod:P)")
        e.add_argument("kind", choices=["vm", "vmi", "vmirs"])
        e.add_argument("name")
        e.add_argument("--port", type=int, required=True)
        e.add_argument("--protocol", choices=["TCP", "UDP"], default="TCP")
        if verb == "expose":
            e.add_argument("--node-port", type=int, default=None, help="30000-32767; free one if not given")
            servicecmd.add_expose_flags(e)
        else:
            e.set_defaults(service_name=None)
    f = sub.add_parser("fip", help="floating IPs: a provider address mapped 1:1 to a VM")
    fsub = f.add_subparsers(dest="fip_command", required=True)
    fc = fsub.add_parser("create")
    fc.add_argument("address")
    fc.add_argument("--network", required=True)
    fa = fsub.add_parser("attach")
    fa.add_argument("address")
    fa.add_argument("kind", choices=["vm"])
    fa.add_argument("name")
    for verb in ("detach", "delete"):
        fsub.add_parser(verb).add_argument("address")
    fsub.add_parser("list")
    imagecmd.add_parser(sub)
    imageupload.add_parser(sub)
    volumecmd.add_parser(sub)
    snapshotcmd.add_vm_parser(sub)
    instancetypecmd.add_parser(sub)
    workloadcmd.add_parser(sub)
    preferencecmd.add_parser(sub)
    priorityclasscmd.add_parser(sub)
    migratecmd.add_parser(sub)
    migrationpolicycmd.add_parser(sub)
    ctl.vnc.add_parser(sub)
    portforward.add_parser(sub)
    exportcmd.add_parser(sub)
    draincmd.add_parsers(sub)
    nodemarks.add_parser(sub)
    expandcmd.add_parser(sub)
    hotplugcmd.add_parser(sub)
    describe.add_parser(sub)
    createvm.add_parser(sub)
    version.add_parser(sub)
    sshcmd.add_parser(sub)
    ctl.webconsole.add_parser(sub)
    from ctl import lab
    lab.add_parser(sub)
    kubectlforms.add_namespace_options(p)
    return p


COMMANDS: dict[str, Callable[[ApiClient, argparse.Namespace], Awaitable[int]]] = {
    "apply": manifestcmd.cmd_apply, "get": cmd_get, "start": lifecyclecmd.cmd_lifecycle,
    "stop": lifecyclecmd.cmd_lifecycle, "restart": lifecyclecmd.cmd_lifecycle, "delete": lifecyclecmd.cmd_delete,
    "console": cmd_console, "image": imagecmd.run, "image-upload": imageupload.run,
    "expose": cmd_expose, "unexpose": cmd_expose, "fip": cmd_fip, "volume": volumecmd.run,
    "instancetype": instancetypecmd.run, "scale": workloadcmd.scale, "vm": snapshotcmd.run_vm,
    "preference": preferencecmd.run, "priorityclass": priorityclasscmd.run, "vnc": ctl.vnc.run,
    "migrate": migratecmd.run, "migrate-cancel": migratecmd.run, "migration": migratecmd.run,
    "migrationpolicy": migrationpolicycmd.run,
    "port-forward": portforward.run,
    "vmexport": exportcmd.run, "expand": expandcmd.run, "addvolume": hotplugcmd.run, "removevolume": hotplugcmd.run,
    "cordon": draincmd.run, "uncordon": draincmd.run, "drain": draincmd.run, "label": nodemarks.run,
    "taint": nodemarks.run,
    "describe": describe.run, "version": version.run, "console-web": ctl.webconsole.run,
    **dict.fromkeys(power.VERBS, power.cmd_power),
}


async def run(args: argparse.Namespace) -> int:
    api = await ApiClient.connect(args.server, args.creds)
    try:
        return await COMMANDS[args.command](api, args)
    finally:
        await api.close()


def stdout_reader_gone() -> bool:
    """Standard output is a pipe nobody reads any more (the kernel flags its writing end with POLLERR)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no real file behind sys.stdout
        return False


def kubectl_forms(args: argparse.Namespace) -> argparse.Namespace:
    return kubectlforms.normalize(args, parser())


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args = kubectl_forms(args)
        if args.command == "lab":
            from ctl import lab
            code = lab.run(args)
        elif args.command == "create":  # prints a manifest: nothing to connect for
            code = createvm.run(args)
        elif args.command == "ssh":  # ssh takes over; its ProxyCommand connects
            code = sshcmd.run(args)
        else:
            code = asyncio.run(run(args))
        sys.stdout.flush()  # here, not at the interpreter's exit, where a closed pipe cannot be caught
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 128 + signal.SIGINT
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
            # its reader went (`virtbus get vmi x -o yaml | head`): end as quietly as `cat` would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush there
            code = 128 + signal.SIGPIPE
        else:  # another pipe of the command's own among them: an error like any other
            print(f"error: {exc}", file=sys.stderr)
            code = 1
    sys.exit(code)
