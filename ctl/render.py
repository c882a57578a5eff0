"""Tables and -o json|yaml|name|jsonpath=... output, kubectl style: vms, vmis and nodes print as KubeVirt's
and Kubernetes' objects (proto.resources), the rest as virtbus's own."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ctl import jsonpath
from proto.api import NodeView, VMView
from proto.errors import ApiError, Code
from proto.events import Event
from proto.quantity import format_bytes
from proto.state import VMI, is_ready

if TYPE_CHECKING:
    from proto import resources


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def age(since: float | None, now: float | None = None) -> str:
    if not since:
        return "<none>"
    seconds = int((now or time.time()) - since)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


JSONPATH = "jsonpath="


def output_format(text: str) -> str:
    """get's -o, checked before connecting (argparse's type): a jsonpath template is parsed here."""
    if text in ("json", "yaml", "wide", "name"):
        return text
    if text.startswith(JSONPATH):
        try:
            jsonpath.parse(text[len(JSONPATH):])
        except ApiError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: one of json, yaml, wide, name, jsonpath=TEMPLATE")


def is_structured(fmt: str | None) -> bool:
    """Whether -o asks for the objects (json, yaml, name, jsonpath) rather than a table."""
    return fmt is not None and (fmt in ("json", "yaml", "name") or fmt.startswith(JSONPATH))


def structured(value: Any, fmt: str) -> str:
    data = msgspec.to_builtins(value)
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt.startswith(JSONPATH):
        return jsonpath.render(jsonpath.parse(fmt[len(JSONPATH):]), data)
    if fmt == "name":
        raise ApiError(Code.BAD_REQUEST, "-o name names Kubernetes objects; these are virtbus's own", "output")
    import yaml  # here: only -o yaml needs it, and every command would wait for its import

    return yaml.safe_dump(data, sort_keys=False).rstrip()


def name_of(obj: resources.Obj) -> str:
    """kubectl's -o name: kind.group/name (virtualmachine.kubevirt.io/testvm), or kind/name in the core
    group (service/web, node/node1)."""
    api, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", "")).lower()
    group = api.rpartition("/")[0]
    return f"{kind}.{group}/{obj['metadata']['name']}" if group else f"{kind}/{obj['metadata']['name']}"


def objects(items: list[resources.Obj], fmt: str, *, one: bool) -> str:
    """One object as itself, or several as kubectl's List; -o name: each one's name, a line each."""
    from proto import resources  # here: only -o json|yaml|name needs the manifests, a tenth of a start-up

    if fmt == "name":
        return "\n".join(name_of(o) for o in items)
    return structured(items[0] if one else resources.object_list(items), fmt)


def vm_objects(items: list[VMView], fmt: str, *, one: bool = False) -> str:
    from proto import resources

    return objects([resources.vm_object(v) for v in items], fmt, one=one)


def vmi_objects(items: list[VMI], fmt: str, *, one: bool = False) -> str:
    from proto import resources

    return objects([resources.vmi_object(v) for v in items], fmt, one=one)


def node_objects(items: list[NodeView], fmt: str, *, one: bool = False) -> str:
    from proto import resources

    return objects([resources.node_object(n) for n in items], fmt, one=one)


def vms(items: list[VMView], wide: bool) -> str:
    headers = ["NAME", "AGE", "STATUS", "READY"] + (["NODE", "STRATEGY"] if wide else [])
    rows = []
    for v in items:
        row = [v.vm.spec.name, age(v.vm.created_at), v.printable_status,
               str(v.printable_status == "Running" and v.vmi is not None and is_ready(v.vmi))]
        if wide:
            row += [(v.vmi.node_name if v.vmi else None) or "<none>", v.vm.spec.run_strategy.value]
        rows.append(row)
    return table(headers, rows)


def vmis(items: list[VMI], wide: bool) -> str:
    headers = ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"] + (["REASON"] if wide else [])
    rows = []
    for v in items:
        ip = next((i.ip_address for i in v.interfaces if i.ip_address), None) or ""
        row = [v.name, age(v.created_at), v.phase.value, ip, v.node_name or "", str(is_ready(v))]
        if wide:
            cond = next((c for c in v.conditions if c.status == "False"), None)
            row.append(v.reason or (cond.message if cond else ""))
        rows.append(row)
    return table(headers, rows)


def nodes(items: list[NodeView], wide: bool) -> str:
    headers = ["NAME", "STATUS", "CPUS", "MEMORY", "ALLOCATED", "VMIS", "KVM"] + (
        ["VCPUS", "ADDRESS", "AGE"] if wide else [])
    rows = []
    for n in items:
        # kubectl's STATUS: a cordoned node is Ready,SchedulingDisabled
        status = ("Ready" if n.ready else "NotReady") + (",SchedulingDisabled" if n.node.unschedulable else "")
        row = [n.node.name, status, str(n.node.cpus), format_bytes(n.node.memory),
               format_bytes(n.allocated_memory), str(n.vmis), "yes" if n.node.kvm else "no (TCG)"]
        if wide:
            # vCPUs booked / what the cpuAllocationRatio lets the node hold (proto.clusterconfig)
            row += [f"{n.allocated_cpus}/{n.vcpu_capacity or '?'}", n.node.address or "", age(n.node.started_at)]
        rows.append(row)
    return table(headers, rows)


def event_row(e: Event) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(e.timestamp))
    kind = {"VirtualMachine": "vm", "VirtualMachineInstance": "vmi"}.get(e.kind, e.kind.lower())
    return f"{when:<9}   {e.type:<7}   {e.reason:<16}   {kind}/{e.name:<20}   {e.message}"
