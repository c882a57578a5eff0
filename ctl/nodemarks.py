"""``virtbus label node NAME key=value... key-... [--overwrite]`` and ``virtbus taint node NAME
key=value:Effect... key:Effect-... [--overwrite]``: kubectl label and taint, for nodes (what nodeSelector
and affinity select by; what instances without a toleration keep off). A VM's labels are its
manifest's: apply it again."""

from __future__ import annotations

import argparse

from ctl.client import ApiClient
from ctl.stdout import say
from proto import taints
from proto.api import Ack, LabelRequest, TaintKey, TaintRequest
from proto.errors import ApiError, Code
from proto.spec import Taint

NODE_KINDS = ("node", "nodes", "no")


def _target(words: list[str], verb: str, form: str) -> tuple[str, list[str]]:
    """The node NAME (KIND NAME or KIND/NAME) and the changes after it, as kubectl takes them."""
    kind, _, name = words[0].partition("/") if "/" in words[0] else (words[0], "", words[1] if len(words) > 1 else "")
    changes = words[1:] if "/" in words[0] else words[2:]
    if kind.lower() not in NODE_KINDS:
        raise ApiError(Code.BAD_REQUEST, f"{verb} takes node NAME (a VM's labels are its manifest's), not {kind!r}",
                       "kind")
    if not name or not changes:
        raise ApiError(Code.BAD_REQUEST, f"{verb} node NAME {form}", verb)
    return name, changes


def request(words: list[str], overwrite: bool) -> LabelRequest:
    """label's words, as kubectl takes them: key=value sets, key- removes (pure)."""
    name, changes = _target(words, "label", "key=value... or key-...")
    labels: dict[str, str] = {}
    remove: list[str] = []
    for change in changes:
        if change.endswith("-") and "=" not in change:
            remove.append(change[:-1])
        elif "=" in change:
            key, _, value = change.partition("=")
            labels[key] = value
        else:
            raise ApiError(Code.BAD_REQUEST, f"{change!r}: a label is key=value, or key- to remove it", "labels")
    return LabelRequest(name=name, labels=labels, remove=remove, overwrite=overwrite)


def taint_request(words: list[str], overwrite: bool) -> TaintRequest:
    """taint's words, as kubectl takes them: key=value:Effect adds, key:Effect- or key- removes (pure)."""
    name, changes = _target(words, "taint", "key=value:NoSchedule... or key:NoSchedule-...")
    add: list[Taint] = []
    remove: list[TaintKey] = []
    for change in changes:
        taint, gone = taints.parse_text(change)
        if taint is not None:
            add.append(taint)
        elif gone is not None:
            remove.append(TaintKey(key=gone[0], effect=gone[1]))
    return TaintRequest(name=name, add=add, remove=remove, overwrite=overwrite)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("label", help="label a node (kubectl label node NAME key=value key-)")
    p.add_argument("words", nargs="+", metavar="node NAME key=value|key-")
    p.add_argument("--overwrite", action="store_true", help="a label that has a value may get another")
    t = sub.add_parser("taint", help="taint a node (kubectl taint node NAME key=value:NoSchedule key:NoSchedule-)")
    t.add_argument("words", nargs="+", metavar="node NAME key=value:Effect|key:Effect-|key-")
    t.add_argument("--overwrite", action="store_true", help="a taint there may get another value")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.command == "taint":
        say((await api.call("node", "taint", taint_request(args.words, args.overwrite), Ack)).message)
    else:
        say((await api.call("node", "label", request(args.words, args.overwrite), Ack)).message)
    return 0
