"""``virtbus label node NAME key=value... key-... [--overwrite]``: kubectl label, for nodes (what
nodeSelector and node affinity select by). A VM's labels are its manifest's: apply it again."""

from __future__ import annotations

import argparse

from ctl.client import ApiClient
from ctl.lab import say
from proto.api import Ack, LabelRequest
from proto.errors import ApiError, Code

NODE_KINDS = ("node", "nodes", "no")


def request(words: list[str], overwrite: bool) -> LabelRequest:
    """KIND NAME or KIND/NAME, then key=value and key- changes, as kubectl takes them (pure)."""
    kind, _, name = words[0].partition("/") if "/" in words[0] else (words[0], "", words[1] if len(words) > 1 else "")
    changes = words[1:] if "/" in words[0] else words[2:]
    if kind.lower() not in NODE_KINDS:
        raise ApiError(Code.BAD_REQUEST, f"label takes node NAME (a VM's labels are its manifest's), not {kind!r}",
                       "kind")
    if not name or not changes:
        raise ApiError(Code.BAD_REQUEST, "label node NAME key=value... or key-...", "labels")
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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("label", help="label a node (kubectl label node NAME key=value key-)")
    p.add_argument("words", nargs="+", metavar="node NAME key=value|key-")
    p.add_argument("--overwrite", action="store_true", help="a label that has a value may get another")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    say((await api.call("node", "label", request(args.words, args.overwrite), Ack)).message)
    return 0
