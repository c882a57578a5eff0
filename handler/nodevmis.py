"""This node's VMIs as the handler's parts see them: the leader's copies under <node>.* in the node's
shard (proto.nodevmis), through the process's one informer (servicekit.informer), so the agent, node
ports, floating IPs and metrics share one watch of the node's own keys and never hear of another
node's VMIs."""

from __future__ import annotations

from proto import subjects
from proto.nodevmis import NodeVmi
from proto.state import VMI
from servicekit.informer import Informer, shared
from servicekit.store import Store


def informer(store: Store, node: str) -> Informer[NodeVmi]:
    """Changes heard as the shard republishes them (servicekit.kvlive): no consumer on the server
    scanning the shard's writes for this node's. A shard an older virtbus made without a republish, on
    a nats-server that will not add one (2.9), is watched through a consumer instead."""
    shard = subjects.node_vmis_bucket(node)
    return shared(store, store.node_vmis(node), subjects.node_vmis_of_node(node),
                  republished=subjects.node_vmis_republished(shard) if republishes(store, node) else None)


def republishes(store: Store, node: str) -> bool:
    """Whether the node's shard republishes its copies (Store.republishing, as the handler found it)."""
    return subjects.node_vmis_bucket(node) in store.republishing


async def vmis_here(store: Store, node: str) -> list[VMI]:
    """The VMIs bound here, from the cache (a copy may trail its VMI by one watch delivery); not one
    migrating here, which runs on its source until it has moved (proto.migrations)."""
    return [e.value.vmi for e in await informer(store, node).items() if e.value.vmi.node_name == node]


async def copies_here(store: Store, node: str) -> list[VMI]:
    """Every VMI copied here: the ones bound here and the ones migrating here."""
    return [e.value.vmi for e in await informer(store, node).items()]


def vmi_name(key: str) -> str:
    return subjects.node_vmi_parts(key)[1]
