"""Hollow nodes (Kubernetes' kubemark), BENCHMARK TOOLING ONLY: many nodes in one process, each with
its own NATS connection and node credentials, going through the handler's real code paths for
registration (NodeApiClient.register), heartbeat (its lease, as handler.heartbeat beats), its scoped
watch (its own keys of BUCKET_NODE_VMIS) and the watches of the buckets the handler's parts follow whole
(subjects.FOLLOWED_BUCKETS, through the process's informers); the launcher is simulated: a VMI copied
to the node in phase Scheduled is followed as a launcher follows its own (launcher.ownvmi) and
reported Running by the status write a launcher makes.

Nothing here runs a guest, touches a network namespace or is imported by virtbus itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from handler import heartbeat, nodevmis
from launcher import ownvmi
from proto import subjects
from proto.errors import ApiError
from proto.nodeapi import Registration, StatusReport
from proto.nodevmis import NodeVmi
from proto.state import NODE_LEASE_RENEW_S, VMI, Node, Phase
from proto.stored import FOLLOWED_KINDS
from servicekit.cancelling import cancel_and_wait
from servicekit.informer import shared
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Bucket, Store

CPUS = 16
MEMORY = 64 * 2**30
# the bulk of the VMs go to the pool; a node measured on its own has its own pool and VMs
POOL_LABEL = "bench.virtbus.io/pool"
POOL = "hollow"


@dataclass
class Seen:
    """What one hollow node heard: for the invariants (only its own VMIs) and the latencies."""

    keys: set[str] = field(default_factory=set)
    foreign: list[str] = field(default_factory=list)  # keys or values of another node: must stay empty
    running_at: dict[str, float] = field(default_factory=dict)  # VMI -> when its Running report returned
    node_records: int = 0  # node record updates heard


class HollowNode:
    def __init__(self, name: str, url: str, creds: str, pool: str = POOL, *, legacy: bool = False,
                 followed: str = "subscription") -> None:
        """legacy: behave as the handler did before scoped watches and leases (the "before" figures
        against main's scheduler): heartbeat by rewriting the node record, four whole-bucket VMI
        watches (agent, node ports, floating IPs, metrics) and two of every node's record.
        followed: how the buckets every node follows whole are watched (not in legacy): as their
        streams republish them ("subscription", as the handler does), or through a consumer each
        ("consumer", as the handler did before)."""
        self.name = name
        self.legacy = legacy
        self.followed = followed
        self.pool = pool
        self.url = url
        self.creds = creds
        self.seen = Seen()
        self.store: Store | None = None
        self.node: Node | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reporting: set[str] = set()

    async def start(self) -> None:
        self.store = await Store.connect(self.url, f"virtbus-hollow-{self.name}", creds=self.creds,
                                         inbox=subjects.inbox_prefix("node", self.name), create=False, check=False)
        if self.followed == "consumer":
            self.store.republishing = frozenset()  # what Store.connect finds of a stream made without it
        api = NodeApiClient(self.store.nc, self.name)
        labels = {"kubernetes.io/hostname": self.name, POOL_LABEL: self.pool}
        # the control plane checks each registration against every node (scheduler/nodeapi.py): at a
        # thousand nodes registering together that takes minutes, so be patient
        self.node = await api.register(Registration(cpus=CPUS, memory=MEMORY, kvm=False, labels=labels),
                                       patience=900.0)
        if self.legacy:
            self._tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._watch_all(api)),
                           *(asyncio.create_task(self._idle_watch(self.store.vmis)) for _ in range(3)),
                           *(asyncio.create_task(self._idle_watch(self.store.nodes)) for _ in range(2))]
        else:
            self._tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._watch(api)),
                           asyncio.create_task(self._watch_nodes()),
                           *(asyncio.create_task(self._follow(b)) for b in subjects.FOLLOWED_BUCKETS
                             if b != subjects.BUCKET_NODES)]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)  # not a cancel and an await: one may be lost (3.11)
        if self.store is not None:
            await self.store.close()

    async def heartbeat(self) -> None:
        assert self.store is not None and self.node is not None
        if self.legacy:  # main's Agent.heartbeat: a CAS of the whole record, every beat
            beating = msgspec.structs.replace(self.node, heartbeat=time.time())
            if await self.store.nodes.mutate(self.name, lambda current: beating) is None:
                await self.store.nodes.put(self.name, beating)
            return
        await heartbeat.beat(self.store, self.node, self.node.free_disk, time.time())  # the handler's

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(NODE_LEASE_RENEW_S)  # the handler's
            with contextlib.suppress(Exception):  # as the handler: a missed beat is logged, not fatal
                await self.heartbeat()

    async def _watch_nodes(self) -> None:
        """The nodes' records, as the agent (routes) and the fence (addresses) share them."""
        assert self.store is not None
        async for _ in shared(self.store, self.store.nodes).changes():
            self.seen.node_records += 1

    async def _follow(self, bucket: str) -> None:
        """A bucket the handler's parts follow whole (Services, node ports, floating IPs, ...), through
        the process's informer of it, as they do."""
        assert self.store is not None
        async for _ in shared(self.store, self.store.bucket(bucket, FOLLOWED_KINDS[bucket])).changes():
            pass

    async def _idle_watch(self, bucket: Bucket[Any]) -> None:
        async for _ in bucket.watch():
            pass

    async def _watch_all(self, api: NodeApiClient) -> None:
        """main's agent: every VMI of the cluster, its own picked out here."""
        assert self.store is not None
        async for change in self.store.vmis.watch():
            vmi = change.value
            if vmi is None or vmi.node_name != self.name:
                if vmi is not None and vmi.node_name is not None:
                    self.seen.foreign.append(change.key)
                continue
            self.seen.keys.add(subjects.node_vmi(self.name, vmi.name))
            if vmi.phase is Phase.SCHEDULED and not vmi.stop_requested and vmi.name not in self._reporting:
                self._reporting.add(vmi.name)
                asyncio.create_task(self._launch(api, vmi))

    async def _watch(self, api: NodeApiClient) -> None:
        assert self.store is not None
        async for change in nodevmis.informer(self.store, self.name).changes():  # the agent's
            node, vmi = subjects.node_vmi_parts(change.key)
            self.seen.keys.add(change.key)
            if node != self.name or (change.value is not None and change.value.vmi.node_name != self.name):
                self.seen.foreign.append(change.key)
                continue
            if change.value is not None and self._wants_running(change.value) and vmi not in self._reporting:
                self._reporting.add(vmi)
                asyncio.create_task(self._launch(api, change.value.vmi))

    @staticmethod
    def _wants_running(copy: NodeVmi) -> bool:
        return copy.vmi.phase is Phase.SCHEDULED and not copy.vmi.stop_requested

    async def _launch(self, api: NodeApiClient, vmi: VMI) -> None:
        """The simulated launcher: it follows its own VMI as the real one does from its start
        (launcher.ownvmi; not in legacy), and reports what the real one does once its domain runs."""
        if not self.legacy:
            self._tasks.append(asyncio.create_task(self._follow_own(vmi.name)))
        try:
            reply = await api.report(StatusReport(vmi=vmi.name, uid=vmi.uid, phase=Phase.RUNNING), patience=120.0)
            if reply.phase is Phase.RUNNING:
                self.seen.running_at[vmi.name] = time.time()
        except ApiError:
            self._reporting.discard(vmi.name)  # the next change of the copy tries again

    async def _follow_own(self, name: str) -> None:
        assert self.store is not None
        async for _ in ownvmi.changes(self.store, self.name, name):
            pass


async def start_all(nodes: list[HollowNode], parallel: int = 25,
                    start: Callable[[HollowNode], Awaitable[None]] = HollowNode.start) -> None:
    """Registration in waves: a thousand nodes at once would be a thousand connects in one burst."""
    for i in range(0, len(nodes), parallel):
        await asyncio.gather(*(start(n) for n in nodes[i:i + parallel]))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
