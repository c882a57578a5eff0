"""An admin's marks on a node, on the api service: ``node.label`` (kubectl label node, for
nodeSelector and node affinity) and ``node.taint`` (kubectl taint node: what instances without a
toleration keep off, proto.taints). Both are kept in the node's record through its registrations.

A node's labels are its handler's (``--label``, and ``kubernetes.io/hostname``) and an admin's. The
admin's are kept apart in its record (``admin_labels``) and laid over the handler's in ``labels``,
which everything reads; a registration keeps them. An admin changes only the admin's: a key the
handler set is changed where it is set, so the two never fight over one.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proto.api import Ack, LabelRequest, TaintRequest, decode_request
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.state import Node
from proto.taints import retainted
from scheduler.nodemaintenance import node_name
from servicekit.store import Store

MAX_LABELS = 64


def relabelled(node: Node, given: dict[str, str], remove: list[str], overwrite: bool) -> Node | None:
    """The record with those labels set and removed; None when nothing changes (pure). Raises
    Code.INVALID, naming the label, for a handler's key, or a new value without ``overwrite``."""
    admin = dict(node.admin_labels)
    for key, value in given.items():
        if key in node.labels and key not in admin:
            raise ApiError(Code.INVALID, f"label {key!r} is node {node.name}'s handler's (its --label, or its own "
                                         "name): change it where the handler starts", f"labels.{key}")
        if admin.get(key, value) != value and not overwrite:
            raise ApiError(Code.INVALID, f"'{key}' already has a value ({admin[key]}), and --overwrite is false",
                           f"labels.{key}")
        admin[key] = value
    for key in remove:
        if key in node.labels and key not in node.admin_labels:
            raise ApiError(Code.INVALID, f"label {key!r} is node {node.name}'s handler's: remove it where the handler "
                                         "starts", "remove")
        admin.pop(key, None)
    if admin == node.admin_labels:
        return None
    if len(admin) > MAX_LABELS:
        raise ApiError(Code.INVALID, f"a node takes at most {MAX_LABELS} labels of an admin's", "labels")
    handlers = {k: v for k, v in node.labels.items() if k not in node.admin_labels}
    return msgspec.structs.replace(node, labels={**handlers, **admin}, admin_labels=admin)


class NodeMarkApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    def table(self) -> dict[tuple[str, str], Callable[[bytes], object]]:
        return {("node", "label"): self.label, ("node", "taint"): self.taint}

    async def taint(self, body: bytes) -> Ack:
        req = decode_request(body, TaintRequest)
        name = node_name(req.name)
        if not req.add and not req.remove:
            raise ApiError(Code.INVALID, "give at least one taint to add (key=value:Effect) or remove (key:Effect-)",
                           "add")
        remove = [(r.key, r.effect) for r in req.remove]
        changed = False

        def change(node: Node) -> Node | None:
            nonlocal changed
            taints = retainted(node.taints, req.add, remove, req.overwrite)
            changed = taints is not None
            return msgspec.structs.replace(node, taints=taints) if taints is not None else None

        if await self.store.nodes.mutate(name, change) is None:
            raise ApiError(Code.NOT_FOUND, f"node {name!r} not found", "name")
        if not changed:
            return Ack(message=f"node/{name} not tainted")
        return Ack(message=f"node/{name} {'tainted' if req.add else 'untainted'}")

    async def label(self, body: bytes) -> Ack:
        req = decode_request(body, LabelRequest)
        node_name(req.name)
        if not req.labels and not req.remove:
            raise ApiError(Code.INVALID, "give at least one label to set (key=value) or remove (key-)", "labels")
        check_labels(req.labels, "labels")
        check_labels(dict.fromkeys(req.remove, ""), "remove")
        if set(req.labels) & set(req.remove):
            raise ApiError(Code.INVALID, "a label is both set and removed", "remove")
        changed = False

        def change(node: Node) -> Node | None:
            nonlocal changed
            new = relabelled(node, req.labels, req.remove, req.overwrite)
            changed = new is not None
            return new

        if await self.store.nodes.mutate(req.name, change) is None:
            raise ApiError(Code.NOT_FOUND, f"node {req.name!r} not found", "name")
        if not changed:
            return Ack(message=f"node/{req.name} not labeled")
        return Ack(message=f"node/{req.name} {'labeled' if req.labels else 'unlabeled'}")

