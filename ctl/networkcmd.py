"""Secondary networks in the CLI: ``get net-attach-def`` as kubectl prints NetworkAttachmentDefinitions
(``-o json|yaml``: the objects, which apply back as they are), ``delete net-attach-def NAME``; applied
by ``apply -f``."""

from __future__ import annotations

from ctl import kindnames, render
from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, NameRequest, NetworkList, NetworkReply
from proto.nad import nad_object

KINDS = kindnames.NETWORKS
MANIFEST_KINDS = {"NetworkAttachmentDefinition": "network", "Network": "network"}


async def apply(api: ApiClient, body: bytes) -> None:
    net = (await api.call("network", "apply", body, NetworkReply)).item
    say(f"network/{net.name} applied")


async def get(api: ApiClient, name: str | None, output: str | None) -> None:
    nets = [(await api.call("network", "get", NameRequest(name=name), NetworkReply)).item] if name \
        else (await api.call("network", "list", {}, NetworkList)).items
    if output is not None and render.is_structured(output):
        say(render.objects([nad_object(n) for n in nets], output, one=bool(name)))
        return
    say(render.table(["NAME", "TYPE", "BRIDGE", "VLAN", "SUBNET"],
                     [[n.name, n.type, n.bridge, str(n.vlan) if n.vlan is not None else "<none>",
                       n.subnet or "<none> (layer 2)"] for n in nets]))


async def delete(api: ApiClient, name: str) -> None:
    say((await api.call("network", "delete", NameRequest(name=name), Ack)).message)
