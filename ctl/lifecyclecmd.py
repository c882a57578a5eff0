"""``virtbus start|stop|restart|delete``: a VM's life as virtctl drives it, and delete of every kind
kubectl would (NAME, KIND NAME, KIND/NAME), or of a manifest file's objects (``-f``)."""

from __future__ import annotations

import argparse

from ctl import manifestcmd, networkcmd, routecmd, servicecmd, workloadcmd
from ctl.client import ApiClient
from ctl.progress import ask, state_of, vm_view, wait_for
from ctl.stdout import say
from proto.api import Ack, NameRequest, PowerRequest, StartRequest, VMIReply
from proto.errors import ApiError, Code

OWN_DELETE = ("instancetype", "preference", "vmsnapshot", "vmclone")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


async def cmd_delete_vmi(api: ApiClient, args: argparse.Namespace) -> int:
    say((await api.call("vmi", "delete", NameRequest(name=args.name), Ack)).message)
    if args.wait:
        async def probe() -> tuple[bool, str]:
            try:
                vmi = (await api.call("vmi", "get", NameRequest(name=args.name), VMIReply)).item
            except ApiError as exc:
                if exc.code is Code.NOT_FOUND:
                    return True, "deleted"
                raise
            return False, f"{vmi.phase.value}; stopping and cleaning up"

        await wait_for(f"vmi {args.name}", probe, args.timeout)
    return 0


def verb_request(args: argparse.Namespace) -> PowerRequest | StartRequest | None:
    """start's --paused; stop/restart's --force --grace-period N, as virtctl takes them: both or neither."""
    if getattr(args, "paused", False):
        return StartRequest(name=args.name, paused=True)
    force, grace = getattr(args, "force", False), getattr(args, "grace_period", None)
    if force != (grace is not None):
        raise ApiError(Code.BAD_REQUEST, "Must both use --force=true and set --grace-period.", "grace-period")
    return PowerRequest(name=args.name, grace_period=grace) if force else None


async def cmd_lifecycle(api: ApiClient, args: argparse.Namespace) -> int:
    workload = workloadcmd.kind_of(getattr(args, "kind", "vm"))
    if workload is not None:
        await workloadcmd.delete(api, workload, args.name, wait=args.wait, patience=args.timeout)
        return 0
    if getattr(args, "kind", "vm").startswith("vmi"):
        return await cmd_delete_vmi(api, args)
    if getattr(args, "kind", "vm") in servicecmd.KINDS:
        await servicecmd.delete(api, servicecmd.KINDS[args.kind], args.name)
        return 0
    if getattr(args, "kind", "vm") in routecmd.KINDS:
        await routecmd.delete(api, routecmd.KINDS[args.kind], args.name)
        return 0
    if getattr(args, "kind", "vm") in networkcmd.KINDS:
        await networkcmd.delete(api, args.name)
        return 0
    if getattr(args, "kind", "vm") == "node":  # kubectl delete node: one gone for good (README, Faults)
        say((await api.call("node", "delete", NameRequest(name=args.name), Ack)).message)
        return 0
    if getattr(args, "kind", "vm") in OWN_DELETE:  # from delete -f: the kinds whose API deletes them by name
        say((await api.call(args.kind, "delete", NameRequest(name=args.name), Ack)).message)
        return 0
    if getattr(args, "kind", "vm") not in ("vm", "vms"):  # never a VM of that name deleted in its place
        raise ApiError(Code.BAD_REQUEST, f"{args.command} takes a VM, not a {args.kind}", "kind")
    verb = args.command
    # a restart is done once another instance runs: the old one, still Running or failing as it is
    # stopped, says nothing about the new one
    before = await vm_view(api, args.name) if verb == "restart" and args.wait else None
    old = before.vmi if before is not None else None
    say(await ask(api, "vm", verb, args.name, wait=args.wait, patience=args.timeout, request=verb_request(args)))
    if not args.wait:
        return 0
    targets = {"start": {"Paused" if getattr(args, "paused", False) else "Running"}, "restart": {"Running"},
               "stop": {"Stopped"}, "delete": {"Gone"}}[verb]

    async def probe() -> tuple[bool, str]:
        view = await vm_view(api, args.name)
        now = view.vmi if view is not None else None
        if old is not None and now is not None and now.uid == old.uid:
            where = f" on {now.node_name}" if now.node_name else ""
            return False, f"the old instance is stopping ({now.phase.value}{where})"
        status, detail = state_of(view)
        if view is not None and status in ("ErrorUnschedulable", "Failed", "CrashLoopBackOff") and \
                targets & {"Running", "Paused"}:
            vmi = view.vmi
            why = (vmi.reason or next((c.message for c in vmi.conditions if c.status == "False"), "")) if vmi else ""
            raise ApiError(Code.INVALID, f"VM {args.name} is {status}: {why or view.vm.last_failure}")
        if verb == "delete" and status == "Gone":
            try:
                await api.call("vmi", "get", NameRequest(name=args.name), VMIReply)
                return False, "deleted; instance still stopping"
            except ApiError as exc:
                if exc.code is not Code.NOT_FOUND:
                    raise
        # startStrategy: Paused: a VM started is one paused before its guest first runs
        started_paused = view is not None and view.vm.spec.start_paused and "Running" in targets
        return status in targets or (started_paused and status == "Paused"), detail

    await wait_for(f"{args.name}", probe, args.timeout)
    return 0


async def cmd_delete(api: ApiClient, args: argparse.Namespace) -> int:
    if args.file is not None:
        return await manifestcmd.cmd_delete_file(api, args, delete_one)
    return await delete_one(api, args)


async def delete_one(api: ApiClient, args: argparse.Namespace) -> int:
    try:
        return await cmd_lifecycle(api, args)
    except ApiError as exc:
        if exc.code is Code.NOT_FOUND and args.ignore_not_found:
            return 0
        raise
