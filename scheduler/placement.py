"""Pure placement: filter nodes that can run a VMI, score what is left, pick one.

Like kube-scheduler with KubeVirt's defaults: Ready, nodeSelector, memory and CPU fit (vCPUs are
overcommitted 10:1, KubeVirt's cpuAllocationRatio), then least-allocated scoring, which spreads.
Memory is booked as guest RAM plus the per-VM overhead (proto.overhead), as KubeVirt's pod requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.overhead import footprint
from proto.spec import VMSpec
from proto.state import FINAL_PHASES, VMI, Node
from proto.validation import empty_disk_total

CPU_ALLOCATION_RATIO = 10
NODE_READY_WITHIN_S = 15.0  # for a reader without the scheduler's view (see ready_by_heartbeat)


@dataclass(frozen=True)
class NodeUsage:
    node: Node
    ready: bool
    used_memory: int
    used_vcpus: int
    vmis: int
    used_disk: int = 0  # what the emptyDisks of its VMIs may grow to

    @property
    def vcpu_capacity(self) -> int:
        return self.node.cpus * CPU_ALLOCATION_RATIO


@dataclass(frozen=True)
class Placement:
    node: str | None
    message: str  # why, when node is None; the fit summary otherwise


def vcpus(spec: VMSpec) -> int:
    return spec.cpu.cores * spec.cpu.sockets * spec.cpu.threads


def ready_by_heartbeat(nodes: Iterable[Node], now: float) -> dict[str, bool]:
    """Readiness guessed from the handlers' own timestamps against ``now``: only for a reader that
    does not watch the nodes (the scheduler judges them on its own clock, scheduler.nodelife)."""
    return {n.name: now - n.heartbeat <= NODE_READY_WITHIN_S for n in nodes}


def usage(nodes: Iterable[Node], vmis: Iterable[VMI], ready: Mapping[str, bool]) -> list[NodeUsage]:
    """Each node with what its VMIs take; ``ready``: which nodes the caller judged Ready (a node it
    has no verdict on is not)."""
    memory: Counter[str] = Counter()
    cpus: Counter[str] = Counter()
    count: Counter[str] = Counter()
    disk: Counter[str] = Counter()
    for vmi in vmis:
        if vmi.node_name and vmi.phase not in FINAL_PHASES:
            memory[vmi.node_name] += footprint(vmi.spec)
            disk[vmi.node_name] += empty_disk_total(vmi.spec)
            cpus[vmi.node_name] += vcpus(vmi.spec)
            count[vmi.node_name] += 1
    return [NodeUsage(n, ready.get(n.name, False), memory[n.name], cpus[n.name], count[n.name], disk[n.name])
            for n in sorted(nodes, key=lambda n: n.name)]


def _unfit_reason(spec: VMSpec, u: NodeUsage, only: str | None, ovs: frozenset[str] = frozenset()) -> str | None:
    if not u.ready:
        return "node(s) were not ready"
    if only is not None and u.node.name != only:
        return "node(s) didn't hold the VM's volumes"
    if any(u.node.labels.get(k) != v for k, v in spec.node_selector.items()):
        return "node(s) didn't match node selector"
    if not ovs <= set(u.node.ovs_bridges):
        return f"node(s) didn't have the Open vSwitch bridge {', '.join(sorted(ovs - set(u.node.ovs_bridges)))}"
    if u.used_memory + footprint(spec) > u.node.memory:
        return "Insufficient memory"
    if u.used_vcpus + vcpus(spec) > u.vcpu_capacity:
        return "Insufficient cpu"
    # emptyDisks are sparse, but each may fill up: the node's free disk must hold them all at full
    # size (its free space already counts what the others hold today, so this errs on the safe side)
    wanted = empty_disk_total(spec)
    if wanted and u.node.free_disk is not None and u.used_disk + wanted > u.node.free_disk:
        return "Insufficient disk"
    return None


def _score(spec: VMSpec, u: NodeUsage) -> float:
    free_mem = 1 - (u.used_memory + footprint(spec)) / u.node.memory
    free_cpu = 1 - (u.used_vcpus + vcpus(spec)) / u.vcpu_capacity
    return (free_mem + free_cpu) / 2


def place(spec: VMSpec, nodes: list[NodeUsage], only: str | None = None,
          ovs: frozenset[str] = frozenset()) -> Placement:
    """only: the node the VM's volumes are on (scheduler.volumes), if they are on one; ovs: the Open
    vSwitch bridges its networks need (scheduler.networkneeds)."""
    reasons: Counter[str] = Counter()
    fits: list[NodeUsage] = []
    for u in nodes:
        reason = _unfit_reason(spec, u, only, ovs)
        if reason is None:
            fits.append(u)
        else:
            reasons[reason] += 1
    if not fits:
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        return Placement(None, f"0/{len(nodes)} nodes are available" + (f": {detail}." if detail else "."))
    # Highest score wins; ties go to the node with fewer VMIs, then by name, so results are stable.
    best = max(fits, key=lambda u: (_score(spec, u), -u.vmis, [-ord(c) for c in u.node.name]))
    return Placement(best.node.name, f"{len(fits)}/{len(nodes)} nodes fit")
