"""NetworkAttachmentDefinitions (k8s.cni.cncf.io/v1), as multus users write them: a CNI config of type
bridge or ovs, with ipam (virtbus hands out the addresses) or without (a layer-2 network: the segment's
own DHCP server does). Refused by field path where virtbus cannot honour them, like proto.kubevirt."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from proto.schema import IGNORED, INT, METADATA, NAMESPACE, STR, Choice, Object, Off, bad, check_kind, invalid, required
from proto.spec import NetworkAttachment

NAD_API_VERSIONS = ("k8s.cni.cncf.io/v1",)

_NAD = Object({"apiVersion": STR, "kind": STR, "metadata": METADATA, "spec": Object({"config": STR}),
                "status": IGNORED})
_CNI_BRIDGE = Object({
    "cniVersion": STR,
    "name": STR,
    "type": Choice(("bridge", "ovs")),
    "bridge": STR,
    "vlan": INT,
    "isGateway": Off(),  # virtbus gives the host bridge no address
    "ipMasq": Off(),  # nor masquerades the network's traffic
    "ipam": Object({
        # virtbus allocates from the subnet, like host-local and whereabouts; dhcp (CNI's plugin):
        # the guest asks the segment's DHCP server, as with no ipam at all
        "type": Choice(("host-local", "whereabouts", "dhcp")),
        "subnet": STR, "rangeStart": STR, "rangeEnd": STR, "gateway": STR,
        "range": STR, "range_start": STR, "range_end": STR,  # whereabouts spelling
    }),
})

def network_from_nad(obj: Mapping[str, Any]) -> NetworkAttachment:
    check_kind(obj, NAD_API_VERSIONS, "NetworkAttachmentDefinition")
    tree = _NAD.walk(obj, "")
    name = required(required(tree, "metadata", ""), "name", "metadata")
    where = "spec.config"
    try:
        config = json.loads(required(required(tree, "spec", ""), "config", "spec"))
    except json.JSONDecodeError as exc:
        raise bad(where, f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad(where, f"{where} is nested too deeply") from None
    cni = _CNI_BRIDGE.walk(config, where)
    required(cni, "type", where)
    ipam = cni.get("ipam", {})  # none (or {}): a layer-2 network, addresses from the segment's DHCP
    if ipam.get("type") == "dhcp":
        extra = sorted(set(ipam) - {"type"})
        if extra:
            raise invalid(f"{where}.ipam.{extra[0]}", f"{where}.ipam of type dhcp takes no {extra[0]}")
        ipam = {}
    subnet = ipam.get("subnet")
    if subnet is not None and "range" in ipam:
        raise invalid(f"{where}.ipam.range", f"{where}.ipam.subnet and range are mutually exclusive")
    if subnet is None and "range" in ipam:
        try:  # whereabouts writes the range as an address inside the subnet: 192.168.2.225/28
            subnet = str(ipaddress.ip_network(ipam["range"], strict=False))
        except ValueError as exc:
            raise invalid(f"{where}.ipam.range", f"{where}.ipam.range: {exc}") from None
    if subnet is None and ipam:
        raise invalid(f"{where}.ipam.subnet", f"{where}.ipam.subnet is required (or no ipam: layer 2)")
    return NetworkAttachment(
        name=name,
        bridge=required(cni, "bridge", where),
        subnet=subnet,
        gateway=ipam.get("gateway"),
        range_start=ipam.get("rangeStart", ipam.get("range_start")),
        range_end=ipam.get("rangeEnd", ipam.get("range_end")),
        type=cni["type"],
        vlan=cni.get("vlan"),
    )


def nad_object(net: NetworkAttachment) -> dict[str, Any]:
    """The NetworkAttachmentDefinition a stored network reads back as (``get net-attach-def -o yaml``):
    a CNI config of what virtbus keeps, which network_from_nad takes back as the same network."""
    config: dict[str, Any] = {"cniVersion": "0.3.1", "name": net.name, "type": net.type, "bridge": net.bridge}
    if net.vlan is not None:
        config["vlan"] = net.vlan
    if net.subnet is not None:
        extra = {"rangeStart": net.range_start, "rangeEnd": net.range_end, "gateway": net.gateway}
        config["ipam"] = {"type": "host-local", "subnet": net.subnet,
                          **{k: v for k, v in extra.items() if v is not None}}
    return {"apiVersion": NAD_API_VERSIONS[0], "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": net.name, "namespace": NAMESPACE},
            "spec": {"config": json.dumps(config)}}
