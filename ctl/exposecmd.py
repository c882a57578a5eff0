"""``virtbus expose|unexpose vm|vmi|vmirs NAME --port P``: a VM's port as a Service (``--name``, virtctl's
expose), or on a node port of its own node (virtbus's own: DNAT node:N -> pod:P)."""

from __future__ import annotations

import argparse

from ctl import servicecmd
from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, ExposeRequest, UnexposeRequest
from proto.errors import ApiError, Code
from proto.state import Exposure


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


async def run(api: ApiClient, args: argparse.Namespace) -> int:
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
