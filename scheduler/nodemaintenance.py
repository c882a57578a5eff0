"""Node maintenance on the api service: ``node.cordon``, ``node.uncordon``, ``vmi.evict`` and
``node.delete`` (kubectl cordon, uncordon, the eviction drain sends for each pod, and delete node).

A cordoned node's record says ``unschedulable``: the binder binds nothing new there
(scheduler.placement), and what runs there runs on. An eviction of an instance whose evictionStrategy
says so is a live migration off the node (proto.migrations.eviction_way); else it stops it as ``stop`` does,
marked ``evicted``: a VM that wants it running (Always, RerunOnFailure) runs it again elsewhere
(scheduler.vmplan), a replica set replaces it, and an instance of nobody's just ends. The drain itself
(cordon, then evict each instance and wait for the node to be empty) is the CLI's, as kubectl's is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

import msgspec

from proto import subjects
from proto.api import Ack, EvictRequest, NameRequest, decode_request
from proto.errors import ApiError, Code
from proto.events import Event
from proto.migrations import Migration, eviction_way
from proto.spec import EvictionStrategy, RunStrategy, eviction_strategy
from proto.state import FINAL_PHASES, VM, VMI, Condition, Node, Phase
from proto.validation import check_grace_period
from scheduler.nodeapi import release_node_network
from scheduler.stopping import evicted
from servicekit.store import Store

# what its VM does once an evicted instance has ended (scheduler.vmplan)
RUNS_AGAIN = frozenset({RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE})
NODE_DELETED = "NodeDeleted"  # the reason of an instance given up with its node


def cordoned(node: Node, unschedulable: bool) -> Node | None:
    """The record with the node's schedulability so; None when it already is (pure)."""
    return None if node.unschedulable is unschedulable else msgspec.structs.replace(node, unschedulable=unschedulable)


def what_follows(vmi: VMI, vm: VM | None) -> str:
    """What happens to an evicted instance once it has ended, for the reply (pure)."""
    if vm is not None:
        strategy = vm.spec.run_strategy
        if strategy in RUNS_AGAIN:
            return f"VM {vm.spec.name} starts it again on another node"
        return f"VM {vm.spec.name} (runStrategy {strategy.value}) leaves it stopped"
    if vmi.owner is not None:
        return f"VirtualMachineInstanceReplicaSet {vmi.owner} replaces it"
    return "it belongs to no VM or replica set, so nothing starts it again"


def node_deleted(vmi: VMI, uid: str, node: str, now: float) -> VMI | None:
    """That instance of a node deleted as dead: Failed if it had not ended, and fenced either way, so
    its record goes without the node's word and its VM runs it again elsewhere, no failure counted;
    should the node come back, its handler kills what still runs of it (handler.vmiplan). None when
    it is no longer that instance on that node (pure)."""
    if vmi.uid != uid or vmi.node_name != node or vmi.fenced:
        return None
    if vmi.phase in FINAL_PHASES:
        return msgspec.structs.replace(vmi, fenced=True)
    reason = f"its node {node} was deleted as lost: the instance is given up and runs again where its owner says"
    ready = Condition(type="Ready", status="False", reason=NODE_DELETED, message=reason, last_transition_time=now)
    return msgspec.structs.replace(vmi, phase=Phase.FAILED, fenced=True, reason=reason, finished_at=now,
                                   phase_before_unknown=None,
                                   conditions=[*(c for c in vmi.conditions if c.type != "Ready"), ready])


def deletion_refusal(node: str, ready: bool, vmis: list[VMI]) -> str | None:
    """Why a node may not be deleted now, or None (pure). A Ready node's handler would only register
    it again; a high-availability instance fails over by its lease alone, never on anyone's word, so
    one that has not yet is left to it."""
    if ready:
        return (f"node {node} is Ready: its handler would register it again. Drain it and stop its handler first, "
                f"or wait until it is NotReady")
    ha = sorted(v.name for v in vmis if v.node_name == node and v.spec.high_availability
                and v.phase not in FINAL_PHASES)
    if ha:
        return (f"node {node} runs high-availability VMIs ({', '.join(ha)}) that have not failed over: their "
                f"launchers may still renew their leases, so they may still run; they fail over once the leases "
                f"lapse")
    return None


class NodeMaintenanceApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 ready: Callable[[str], Awaitable[bool]] | None = None,
                 cluster_strategy: Callable[[], Awaitable[EvictionStrategy | None]] | None = None,
                 evacuate: Callable[[str], Awaitable[Migration]] | None = None) -> None:
        """ready: whether a node is Ready now, as the api service judges it (node.delete);
        cluster_strategy: the KubeVirt CR's evictionStrategy now, for an instance whose spec has none;
        evacuate: the live migration that moves an instance off its node (scheduler.migrationapi)."""
        self.store = store
        self.evacuate = evacuate
        self.clock = clock
        self.ready = ready
        self.cluster_strategy = cluster_strategy

    def table(self) -> dict[tuple[str, str], Callable[[bytes], object]]:
        return {("node", "cordon"): self.cordon, ("node", "uncordon"): self.uncordon, ("vmi", "evict"): self.evict,
                ("node", "delete"): self.delete}

    async def delete(self, body: bytes) -> Ack:
        """kubectl delete node, for a node that is gone for good: its record and lease go, and the
        instances bound to it are given up (node_deleted), as Kubernetes' pod garbage collector gives up
        a deleted node's pods. Refused while the node is Ready, or while it has HA instances not yet
        failed over."""
        name = _node_name(body)
        entry = await self.store.nodes.require(name, "node")
        ready = await self.ready(name) if self.ready is not None else True
        vmis = [e.value for e in await self.store.vmis.items()]
        refusal = deletion_refusal(name, ready, vmis)
        if refusal is not None:
            raise ApiError(Code.CONFLICT, refusal, "name")
        await self.store.nodes.delete(name, entry.revision)  # a re-registration meanwhile: Conflict, nothing lost
        await self.store.node_leases.delete(name)
        await release_node_network(self.store, name, entry.value.pod_cidr)
        given_up = []
        for vmi in vmis:
            if vmi.node_name != name or vmi.fenced:
                continue
            written = await self.store.vmis.mutate(vmi.name, partial(node_deleted, uid=vmi.uid, node=name,
                                                                     now=self.clock()))
            if written is not None and written.value.uid == vmi.uid and written.value.fenced:
                given_up.append(vmi.name)
                if vmi.phase not in FINAL_PHASES:
                    await self.store.emit(Event(kind="VirtualMachineInstance", name=vmi.name, reason=NODE_DELETED,
                                                message=written.value.reason, timestamp=self.clock(), type="Warning",
                                                node=name))
        await self.store.emit(Event(kind="Node", name=name, reason="RemovingNode",
                                    message=f"Removing Node {name} from Controller", timestamp=self.clock(), node=name))
        what = f"; its VMIs given up: {', '.join(sorted(given_up))}" if given_up else ""
        return Ack(message=f'node "{name}" deleted{what}')

    async def cordon(self, body: bytes) -> Ack:
        return await self._schedulable(_node_name(body), unschedulable=True)

    async def uncordon(self, body: bytes) -> Ack:
        return await self._schedulable(_node_name(body), unschedulable=False)

    async def _schedulable(self, name: str, *, unschedulable: bool) -> Ack:
        changed = False

        def change(node: Node) -> Node | None:
            nonlocal changed
            new = cordoned(node, unschedulable)
            changed = new is not None
            return new

        if await self.store.nodes.mutate(name, change) is None:
            raise ApiError(Code.NOT_FOUND, f"node {name!r} not found", "name")
        verb = "cordoned" if unschedulable else "uncordoned"
        if not changed:
            return Ack(message=f"node/{name} already {verb}")
        # kubelet's event for the change, as kubectl describe node shows it
        status = "NodeNotSchedulable" if unschedulable else "NodeSchedulable"
        await self.store.emit(Event(kind="Node", name=name, reason=status,
                                    message=f"Node {name} status is now: {status}", timestamp=self.clock(), node=name))
        return Ack(message=f"node/{name} {verb}")

    async def evict(self, body: bytes) -> Ack:
        req = decode_request(body, EvictRequest)
        if not subjects.is_dns1123_label(req.name):
            raise ApiError(Code.INVALID, f"{req.name!r} is not a valid name (a DNS-1123 label)", "name")
        check_grace_period(req.grace_period)
        entry = await self.store.vmis.require(req.name, "VMI")
        vmi = entry.value
        if vmi.phase in FINAL_PHASES:
            return Ack(message=f"VMI {req.name} has ended ({vmi.phase.value}): nothing to evict")
        if vmi.node_name is None:
            raise ApiError(Code.INVALID, f"VMI {req.name} is on no node yet: nothing to evict it from", "name")
        cluster = await self.cluster_strategy() if self.cluster_strategy is not None else None
        strategy = eviction_strategy(vmi.spec.eviction_strategy, cluster)
        way, why = eviction_way(vmi, strategy)
        if way == "refuse" and not req.ignore_eviction_strategy:
            raise ApiError(Code.INVALID, f"VMI {req.name} has evictionStrategy {strategy}: {why}; its eviction is "
                                         "refused, as KubeVirt refuses it (stop it, or evict it with "
                                         "ignoreEvictionStrategy: drain --disable-eviction)", "spec.evictionStrategy")
        if way == "migrate" and not req.ignore_eviction_strategy and self.evacuate is not None:
            # KubeVirt's evacuation: the eviction is a live migration, and the drain waits for it
            item = await self.evacuate(req.name)
            await self.store.emit(Event(kind="VirtualMachineInstance", name=req.name, reason="EvictionTriggered",
                                        message=f"eviction from node {vmi.node_name} triggered its live migration "
                                                f"{item.name}", timestamp=self.clock(), node=vmi.node_name))
            return Ack(message=f"VMI {req.name} is migrating off node {vmi.node_name} (migration {item.name})")
        uid, node = vmi.uid, vmi.node_name
        await self.store.vmis.mutate(req.name, lambda v: evicted(v, uid, self.clock(), req.grace_period))
        vm = await self.store.vms.get(req.name) if not vmi.standalone else None
        follows = what_follows(vmi, vm.value if vm is not None else None)
        await self.store.emit(Event(kind="VirtualMachineInstance", name=req.name, reason="Evicted",
                                    message=f"evicted from node {node}: {follows}", timestamp=self.clock(),
                                    node=node))
        return Ack(message=f"VMI {req.name} evicted from node {node}; {follows}")


def _node_name(body: bytes) -> str:
    return node_name(decode_request(body, NameRequest).name)


def node_name(name: str) -> str:
    """A node's name as a request gives it: a DNS-1123 label (the node API's subjects are made of it)."""
    if not subjects.is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"{name!r} is not a valid node name (a DNS-1123 label)", "name")
    return name
