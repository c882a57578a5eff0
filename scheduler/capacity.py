"""What every node has given out, kept as VMIs change rather than counted again for each bind, with
binds assumed at decision time (kube-scheduler's assume cache).

A decision ``assume``s the VMI's resources on the node it chose before its write is acknowledged, so
the next decision (made while that write is in flight) already counts them: concurrent binds never
overcommit a node. A write that fails (CAS conflict or error) ``forget``s the assumption; the VMI as
written or watched, bound (``observe``), replaces it. An unbound version of the VMI seen meanwhile
(an older revision, or someone else's change that will make the write conflict) leaves it in place.

Nodes are kept in a heap by how much of them is allocated, so a decision looks at the least
allocated first and stops after a bounded number that fit (``candidates``), instead of scoring every
node. They come in the order of placement's score for alike nodes (least allocated, then fewer VMIs,
then placement.tie_key), so when every node is alike (``alike``: the same memory and CPUs) the first
that fits is the one scoring every node would choose, and nothing after it need be looked at.

The vCPUs a node holds are its CPUs times the cluster's cpuAllocationRatio (proto.clusterconfig), set
by the binder before each batch of decisions: a new ratio counts every node again, and only decides
what is placed next (what is bound stays bound).

In memory only, no I/O: the binder (scheduler.binder) feeds it from the VMI cache and the node watch.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO
from proto.labels import LabelSelector
from proto.services import pod_labels
from proto.state import FINAL_PHASES, VMI, Node
from scheduler.affinityplan import Placed
from scheduler.placement import NodeUsage, Request, tie_key
from scheduler.preemption import Running


@dataclass(slots=True)
class _Held:
    node: str
    request: Request
    assumed: bool  # decided and being written, not yet seen bound
    vmi: VMI | None = None  # what is held, for affinity (scheduler.affinityplan): its labels and terms

    @property
    def priority(self) -> int:
        return (self.vmi.priority or 0) if self.vmi is not None else 0

    @property
    def keeps_away(self) -> bool:
        """It has a required anti-affinity, which every other decision must heed."""
        affinity = self.vmi.spec.affinity if self.vmi is not None else None
        return affinity is not None and bool(affinity.anti_required)


@dataclass(slots=True)
class _Allocation:
    memory: int = 0
    vcpus: int = 0
    vmis: int = 0
    disk: int = 0

    def add(self, r: Request, sign: int) -> None:
        self.memory += sign * r.memory
        self.vcpus += sign * r.vcpus
        self.disk += sign * r.disk
        self.vmis += sign


Assumption = _Held  # what ``assume`` made: ``forget`` takes back only that one

STALE_MIN = 32  # stale heap entries kept before they are cleared out (at least; more with more nodes)


class CapacityIndex:
    def __init__(self, cpu_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO) -> None:
        self._cpu_ratio = cpu_ratio
        self._held: dict[str, _Held] = {}  # VMI name -> what it takes where
        self._alloc: dict[str, _Allocation] = {}  # node -> the sum of what is held there
        self._requests: dict[tuple[str, int, int, int], Request] = {}  # alike specs share one Request
        self._nodes: dict[str, Node] = {}
        self._ready: dict[str, bool] = {}
        self._usage: dict[str, NodeUsage] = {}  # node -> what it holds, as last refreshed
        self._version: dict[str, int] = {}  # node -> the version of its valid heap entry
        self._heap: list[_HeapEntry] = []  # nodes by allocation, stale entries too
        self._shapes: Counter[tuple[int, int]] = Counter()  # (memory, CPUs) -> how many nodes are so (> 0)
        self._stale: set[str] = set()  # nodes whose NodeUsage no longer says what they hold
        self._holders: dict[str, _Held] = {}  # what is held with a required anti-affinity, by VMI name
        self._soft: set[str] = set()  # nodes with a PreferNoSchedule taint: they rank below the others
        # (key, value) of a launcher pod's label -> the instances held with it: built at the first
        # affinity decision (scheduler.affinityplan), then kept, so a cluster without affinity pays nothing
        self._by_label: dict[tuple[str, str], set[str]] | None = None
        self._priorities: Counter[int] = Counter()  # the priorities of what is held (proto.priorities)

    # --- VMIs -------------------------------------------------------------------------------------
    def observe(self, name: str, vmi: VMI | None) -> None:
        """The VMI as now known (None: gone). Bound and not finished: it holds its node's resources."""
        held = self._held.get(name)
        if vmi is None or vmi.phase in FINAL_PHASES:
            self._release(name)
        elif vmi.node_name is not None:
            request = self._request(vmi)
            if (held is not None and held.assumed and held.node == vmi.node_name and held.request == request
                    and held.priority == (vmi.priority or 0)):
                # the bind as assumed, now seen: what the node holds is the same, so it is not counted
                # again (nor its heap entry renewed: half the entries a burst of binds leaves stale)
                held.assumed = False
                held.vmi = vmi
            elif held is None or held.assumed or held.node != vmi.node_name or held.request != request:
                self._release(name)
                self._hold(name, _Held(vmi.node_name, request, assumed=False, vmi=vmi))
            elif held.priority != (vmi.priority or 0):  # not a bind's: held again, so the count stays true
                self._release(name)
                self._hold(name, _Held(vmi.node_name, request, assumed=False, vmi=vmi))
            else:
                # the same hold; the newest record, so no older one is kept alive beside the cache's
                # (the scheduler's RSS per VMI grew by a record's size while it was not: 4.2 -> 4.7 KiB)
                held.vmi = vmi
        elif held is not None and not held.assumed:
            self._release(name)  # unbound again (not something the binder does, but then it holds nothing)

    def assume(self, name: str, node: str, request: Request, vmi: VMI | None = None) -> Assumption:
        """The binder chose ``node`` for ``name`` (``vmi``): count it there now, before the write is
        acknowledged. Returns the assumption, for ``forget``."""
        self._release(name)
        held = _Held(node, request, assumed=True, vmi=vmi)
        self._hold(name, held)
        return held

    def forget(self, name: str, assumption: Assumption) -> None:
        """Its write failed: that assumption goes, and only that one. A bind already seen stays, and so
        does a newer assumption: the VM controller's create may fail after the binder, deciding the
        same instance created unbound by someone else, made one of its own."""
        if self._held.get(name) is assumption and assumption.assumed:
            self._release(name)

    def holding(self, name: str) -> bool:
        """Whether anything is held (or assumed) under this name."""
        return name in self._held

    def assumed(self, name: str) -> str | None:
        held = self._held.get(name)
        return held.node if held is not None and held.assumed else None

    def request(self, vmi: VMI) -> Request:
        return self._request(vmi)

    def _request(self, vmi: VMI) -> Request:
        spec = vmi.spec
        if spec.volumes:  # emptyDisks count too: not worth sharing
            return Request.of(spec)
        key = (spec.memory, spec.cpu.cores, spec.cpu.sockets, spec.cpu.threads)
        found = self._requests.get(key)
        if found is None:
            found = self._requests[key] = Request.of(spec)
        return found

    def _hold(self, name: str, held: _Held) -> None:
        self._held[name] = held
        self._alloc.setdefault(held.node, _Allocation()).add(held.request, 1)
        self._priorities[held.priority] += 1
        self._stale.add(held.node)
        if held.keeps_away:
            self._holders[name] = held
        if self._by_label is not None and held.vmi is not None:
            for pair in pod_labels(held.vmi).items():
                self._by_label.setdefault(pair, set()).add(name)

    def _release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            self._alloc[held.node].add(held.request, -1)
            self._priorities[held.priority] -= 1
            if not self._priorities[held.priority]:
                del self._priorities[held.priority]
            self._stale.add(held.node)
            self._holders.pop(name, None)
            if self._by_label is not None and held.vmi is not None:
                for pair in pod_labels(held.vmi).items():
                    names = self._by_label.get(pair)
                    if names is not None:
                        names.discard(name)
                        if not names:
                            del self._by_label[pair]

    # --- what is where, for affinity (scheduler.affinityplan) --------------------------------------
    def placed(self) -> Iterator[Placed]:
        """Every instance held, decided ones included, where it is held."""
        return (Placed(h.node, h.vmi) for h in self._held.values() if h.vmi is not None)

    def matching(self, chosen: LabelSelector) -> list[Placed]:
        """The instances held that the selector picks by their launcher pod's labels: looked up by its
        matchLabels (the rarest of them) rather than read off every instance; a selector of expressions
        alone reads every one."""
        if self._by_label is None:
            self._by_label = {}
            for name, held in self._held.items():
                if held.vmi is not None:
                    for pair in pod_labels(held.vmi).items():
                        self._by_label.setdefault(pair, set()).add(name)
        if chosen.match_labels:
            sets: list[set[str]] = [self._by_label.get(pair, set()) for pair in chosen.match_labels.items()]
            rarest: set[str] = min(sets, key=len)
            names: Iterable[str] = rarest
        else:
            names = self._held
        out = []
        for name in names:
            held = self._held[name]
            if held.vmi is not None and chosen.matches(pod_labels(held.vmi)):
                out.append(Placed(held.node, held.vmi))
        return out

    def lowest_priority(self) -> int | None:
        """The lowest priority of what is held (None: nothing is): no instance of that priority or
        lower can preempt anything."""
        return min(self._priorities) if self._priorities else None

    def lower_than(self, priority: int) -> dict[str, list[Running]]:
        """By node, the instances bound there (not assumed, not stopping) of lower priority: what a
        preemptor of ``priority`` may take the place of (scheduler.preemption)."""
        out: dict[str, list[Running]] = {}
        for name, held in self._held.items():
            vmi = held.vmi
            if held.assumed or vmi is None or vmi.stop_requested or held.priority >= priority:
                continue
            out.setdefault(held.node, []).append(Running(name, held.node, held.request, held.priority,
                                                         vmi.created_at))
        return out

    def holders(self) -> list[Placed]:
        """Those of them with a required anti-affinity (few: every decision looks at them)."""
        return [Placed(h.node, h.vmi) for h in self._holders.values() if h.vmi is not None]

    @property
    def node_records(self) -> Mapping[str, Node]:
        return self._nodes

    # --- nodes ------------------------------------------------------------------------------------
    def sync_nodes(self, nodes: Mapping[str, Node], ready: Mapping[str, bool]) -> None:
        """The node watch's records and readiness verdicts now (a node without one: not Ready)."""
        for name in [n for n in self._nodes if n not in nodes]:
            self._unshape(self._nodes[name])
            del self._nodes[name], self._ready[name]
            self._soft.discard(name)
            self._usage.pop(name, None)  # its version stays: a node back again gets a newer one
        for name, node in nodes.items():
            verdict = ready.get(name, False)
            if (old := self._nodes.get(name)) is not node or self._ready.get(name) is not verdict:
                if old is not None:
                    self._unshape(old)
                self._shapes[_shape(node)] += 1
                self._nodes[name] = node
                self._ready[name] = verdict
                self._stale.add(name)
                if any(t.effect == "PreferNoSchedule" for t in node.taints):
                    self._soft.add(name)
                else:
                    self._soft.discard(name)

    def _unshape(self, node: Node) -> None:
        shape = _shape(node)
        self._shapes[shape] -= 1
        if not self._shapes[shape]:
            del self._shapes[shape]  # only the sizes some node has are kept

    def alike(self) -> bool:
        """Every node has the same memory and CPUs (so the same capacity), and none ranks lower for a
        PreferNoSchedule taint: the first of ``candidates`` that fits is the best."""
        return len(self._shapes) <= 1 and not self._soft

    def set_cpu_ratio(self, ratio: int) -> None:
        """The cluster's cpuAllocationRatio now; a change counts every node's vCPU capacity again."""
        if ratio != self._cpu_ratio:
            self._cpu_ratio = ratio
            self._stale.update(self._nodes)

    @property
    def cpu_ratio(self) -> int:
        return self._cpu_ratio

    def usages(self) -> list[NodeUsage]:
        """Every known node with what it holds, assumptions included, sorted by name."""
        self._refresh()
        return [self._usage[n] for n in sorted(self._usage)]

    def candidates(self) -> Iterator[NodeUsage]:
        """Every known node, Ready ones first, least allocated first (then fewer VMIs, then by
        name): what placement.place looks at, reading only as far as it needs. Valid until the
        index next changes."""
        self._refresh()
        heap = self._heap
        if not heap:
            return
        # best-first walk down the heap's tree: the k smallest in O(k log k), the heap untouched
        frontier = [(heap[0], 0)]
        while frontier:
            (_, _, _, _, name, version), at = heapq.heappop(frontier)
            if self._version.get(name) == version and name in self._usage:
                yield self._usage[name]
            for child in (2 * at + 1, 2 * at + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))

    def _refresh(self) -> None:
        """NodeUsage again for the nodes that changed; each goes into the heap anew (its old entry
        goes stale, skipped, and is dropped when the heap is rebuilt)."""
        for name in self._stale:
            node = self._nodes.get(name)
            if node is None:
                continue
            a = self._alloc.get(name) or _Allocation()
            u = NodeUsage(node, self._ready[name], a.memory, a.vcpus, a.vmis, a.disk, self._cpu_ratio)
            self._usage[name] = u
            version = self._version[name] = self._version.get(name, 0) + 1
            heapq.heappush(self._heap, _entry(u, version))
        self._stale.clear()
        # a node's old entry is less allocated than its new one, so stale entries gather at the top,
        # where every walk would step over them (py-spy: a fifth of the scheduler in a burst)
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        # Popping off the top is not enough: a node that stays least allocated (one no VM fits, as a
        # node only VMs selecting it may use) holds the top, and every stale entry beneath it stays,
        # all walked over by every decision (py-spy: 4 ms a decision, a third of the scheduler at
        # 1,000 nodes). So the stale entries go once there are more than a few: O(nodes) each time.
        if len(heap) > len(self._usage) + max(STALE_MIN, len(self._usage) // 32):
            self._heap = [e for e in heap if self._valid(e)]
            heapq.heapify(self._heap)

    def _valid(self, entry: _HeapEntry) -> bool:
        return self._version.get(entry[4]) == entry[5] and entry[4] in self._usage

    def allocation(self, node: str) -> tuple[int, int, int]:
        """(memory, vCPUs, VMIs) held on the node, assumptions included."""
        a = self._alloc.get(node) or _Allocation()
        return a.memory, a.vcpus, a.vmis


_HeapEntry = tuple[bool, float, int, str, str, int]  # not Ready, load, VMIs, tie key, name, version


def _shape(node: Node) -> tuple[int, int]:
    return node.memory, node.cpus


def _entry(u: NodeUsage, version: int) -> _HeapEntry:
    """Not Ready last; then how much of its memory and vCPUs is taken (least allocated first, the
    order of placement's score for alike nodes); then fewer VMIs, then by name as placement breaks
    ties (placement.tie_key)."""
    load = u.used_memory / max(u.node.memory, 1) + u.used_vcpus / max(u.vcpu_capacity, 1)
    return (not u.ready, load, u.vmis, tie_key(u.node.name), u.node.name, version)
