"""``virtbus describe vm|vmi|node NAME``: an object as ``kubectl describe`` prints a custom resource (its
fields as indented ``Title Case:`` lines), then the events about it, oldest first: the first place a
KubeVirt user looks when a VM does not start. A VM's events include its instance's (the scheduling and
the launch are told on the instance)."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import msgspec
import nats.js.errors
from nats.js.api import DeliverPolicy

from ctl import kubectlforms, render, servicecmd
from ctl.client import ApiClient
from ctl.servicecmd import service_object
from ctl.stdout import say
from proto import resources, subjects
from proto.api import NameRequest, NodeList, ServiceReply, VMIReply, VMReply
from proto.errors import ApiError, Code
from proto.events import Event
from proto.schema import NAMESPACE

EVENT_KINDS = {"vm": ("VirtualMachine", "VirtualMachineInstance"), "vmi": ("VirtualMachineInstance",),
               "node": ("Node",), "service": ("Service",)}
_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PLAIN = re.compile(r"[A-Za-z-]+")
_ACRONYMS = ("API", "URL", "UID", "OSB", "GUID")
_decoder = msgspec.json.Decoder(Event)


def add_parser(sub: Any) -> None:
    d = sub.add_parser("describe", help="an object and the events about it (kubectl describe)")
    d.add_argument("kind", help="vm, vmi, node or service (or KIND/NAME)")
    d.add_argument("name", nargs="?")


def title(key: str) -> str:
    """kubectl's way with a custom resource's keys (its smartLabelFor): printableStatus -> Printable
    Status, uid -> UID; a key with anything but letters and '-' in it (a label's) as it is."""
    if not _PLAIN.fullmatch(key):
        return key
    words = _WORD.sub(" ", key).split(" ")
    return " ".join(w.upper() if w.upper() in _ACRONYMS else w[:1].upper() + w[1:] for w in words)


def fields(value: Any, indent: int = 0) -> list[str]:
    """Pure: a tree as kubectl describe lays it out."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{title(key)}:")
                lines += fields(v, indent + 1)
            else:
                lines.append(f"{pad}{title(key)}:{' ' + _scalar(v) if _scalar(v) else ''}")
    elif isinstance(value, list):
        for item in value:  # kubectl lays the elements out one after the other, unmarked
            lines += fields(item, indent) if isinstance(item, (dict, list)) else [f"{pad}{_scalar(item)}"]
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None or v == {} or v == []:
        return ""
    return str(v)


def _pairs(values: dict[str, str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((values or {}).items())] or ["<none>"]


def describe(obj: resources.Obj, events: list[Event], now: float) -> str:
    """Pure: the object and its events as kubectl describe prints them."""
    meta = dict(obj.get("metadata", {}))
    labels, annotations = _pairs(meta.pop("labels", None)), meta.pop("annotations", None)
    namespace = meta.pop("namespace", None if obj.get("kind") == "Node" else NAMESPACE)  # a Node has none
    lines = [f"Name:         {meta.pop('name', '')}", *([f"Namespace:    {namespace}"] if namespace else []),
             f"Labels:       {labels[0]}", *(f"              {p}" for p in labels[1:])]
    notes = [f"{k}: {v}" for k, v in sorted((annotations or {}).items())] or ["<none>"]
    lines += [f"Annotations:  {notes[0]}", *(f"              {n}" for n in notes[1:])]
    lines += [f"API Version:  {obj.get('apiVersion', '')}", f"Kind:         {obj.get('kind', '')}"]
    rest = {"metadata": meta, **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}}
    lines += fields({k: v for k, v in rest.items() if v})
    if not events:
        return "\n".join([*lines, "Events:       <none>"])
    rows = [["Type", "Reason", "Age", "From", "Message"], ["----", "------", "----", "----", "-------"]]
    rows += [[e.type, e.reason, render.age(e.timestamp, now), e.node or "virtbus", e.message] for e in events]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append("Events:")
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    return "\n".join(lines)


async def events_about(api: ApiClient, name: str, kinds: tuple[str, ...]) -> list[Event]:
    """The recorded events of any of kinds named name, oldest first (the stream keeps the last ones):
    read up to the last one recorded when asked, found first by its subject."""
    js = api.nc.jetstream()
    last = 0
    for kind in kinds:
        try:
            last = max(last, (await js.get_last_msg(subjects.STREAM_EVENTS, subjects.event(kind, name))).seq or 0)
        except nats.js.errors.NotFoundError:  # none of that kind (or no stream yet)
            continue
    if not last:
        return []
    sub = await js.subscribe(f"virtbus.events.*.{subjects.token(name)}", ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    found: list[Event] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            try:
                event = _decoder.decode(msg.data)
            except msgspec.DecodeError:  # anyone allowed there may publish: not an event, not shown
                event = None
            if event is not None and event.kind in kinds and event.name == name:
                found.append(event)
            if msg.metadata.sequence.stream >= last:
                return found
    finally:
        await sub.unsubscribe()


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    # the CLI's spellings of the kinds (get's, and a Service's); describe takes those with events
    spelled = args.kind.lower()
    kind = kubectlforms.KINDS.get(spelled) or servicecmd.KINDS.get(spelled)
    if kind not in EVENT_KINDS:
        raise ApiError(Code.BAD_REQUEST, f"describe takes vm, vmi, node or service; not {args.kind!r}", "kind")
    if kind == "vm":
        obj = resources.vm_object((await api.call("vm", "get", NameRequest(name=args.name), VMReply)).item)
    elif kind == "vmi":
        obj = resources.vmi_object((await api.call("vmi", "get", NameRequest(name=args.name), VMIReply)).item)
    elif kind == "service":
        obj = service_object((await api.call("service", "get", NameRequest(name=args.name), ServiceReply)).item)
    else:
        nodes = [n for n in (await api.call("node", "list", {}, NodeList)).items if n.node.name == args.name]
        if not nodes:
            raise ApiError(Code.NOT_FOUND, f"node {args.name!r} not found")
        obj = resources.node_object(nodes[0])
    say(describe(obj, await events_about(api, args.name, EVENT_KINDS[kind]), time.time()))
    return 0
