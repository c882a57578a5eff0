"""Pure placement: filter nodes that can run a VMI, score what is left, pick one.

Like kube-scheduler with KubeVirt's defaults: Ready, nodeSelector, memory and CPU fit (vCPUs are
overcommitted by KubeVirt's cpuAllocationRatio, 10:1 unless the cluster's configuration says otherwise:
proto.clusterconfig; the caller passes it in), then least-allocated scoring, which spreads.
Memory is booked as guest RAM plus the per-VM overhead (proto.overhead), as KubeVirt's pod requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO
from proto.overhead import footprint
from proto.spec import VMSpec
from proto.state import FINAL_PHASES, VMI, Node
from proto.taints import KEEPS_OFF, UNSCHEDULABLE, tolerated, untolerated
from proto.validation import empty_disk_total
from scheduler.affinityplan import Verdict, node_selected

NODE_READY_WITHIN_S = 15.0  # for a reader without the scheduler's view (see ready_by_heartbeat)


@dataclass(frozen=True)
class NodeUsage:
    node: Node
    ready: bool
    used_memory: int
    used_vcpus: int
    vmis: int
    used_disk: int = 0  # what the emptyDisks of its VMIs may grow to
    cpu_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO  # the cluster's cpuAllocationRatio when this was counted

    @property
    def vcpu_capacity(self) -> int:
        return self.node.cpus * self.cpu_ratio


@dataclass(frozen=True)
class Placement:
    node: str | None
    message: str  # why, when node is None; the fit summary otherwise
    scanned: int = 0  # how many nodes were looked at (place's ``enough`` may stop it early)


def vcpus(spec: VMSpec) -> int:
    return spec.cpu.cores * spec.cpu.sockets * spec.cpu.threads


def ready_by_heartbeat(nodes: Iterable[Node], now: float) -> dict[str, bool]:
    """Readiness guessed from the handlers' own timestamps against ``now``: only for a reader that
    does not watch the nodes (the scheduler judges them on its own clock, scheduler.nodelife)."""
    return {n.name: now - n.heartbeat <= NODE_READY_WITHIN_S for n in nodes}


def usage(nodes: Iterable[Node], vmis: Iterable[VMI], ready: Mapping[str, bool], *,
          cpu_ratio: int = DEFAULT_CPU_ALLOCATION_RATIO) -> list[NodeUsage]:
    """Each node with what its VMIs take; ``ready``: which nodes the caller judged Ready (a node it
    has no verdict on is not); ``cpu_ratio``: the cluster's cpuAllocationRatio."""
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
    return [NodeUsage(n, ready.get(n.name, False), memory[n.name], cpus[n.name], count[n.name], disk[n.name],
                      cpu_ratio) for n in sorted(nodes, key=lambda n: n.name)]


@dataclass(frozen=True, slots=True)
class Request:
    """What one VMI takes from its node, worked out once per decision (not once per node)."""

    memory: int
    vcpus: int
    disk: int  # what its emptyDisks may grow to

    @classmethod
    def of(cls, spec: VMSpec) -> Request:
        return cls(footprint(spec), vcpus(spec), empty_disk_total(spec))  # guest RAM and its overhead


def unfit_reason(spec: VMSpec, u: NodeUsage, only: str | None, ovs: frozenset[str], want: Request,
                  bridges: frozenset[str] = frozenset(), vlan_ports: bool = False,
                  affinity: Verdict | None = None) -> str | None:
    """Why the node cannot take the VMI (kube-scheduler's words), or None when it can (``place``'s
    filter; scheduler.preemption asks it of a node with its victims gone)."""
    if not u.ready:
        return "node(s) were not ready"
    # cordoned (kube-scheduler's NodeUnschedulable filter, its words), unless its taint is tolerated
    if u.node.unschedulable and not tolerated(UNSCHEDULABLE, spec.tolerations):
        return "node(s) were unschedulable"
    if u.node.taints and (kept := untolerated(u.node.taints, spec.tolerations, KEEPS_OFF)):
        return f"node(s) had untolerated taint {{{kept[0].key}: {kept[0].value}}}"
    if only is not None and u.node.name != only:
        return "node(s) didn't hold the VM's volumes"
    if spec.node_selector and not node_selected(spec, u.node):
        return "node(s) didn't match node selector"
    if affinity is not None and (why := affinity.reason(u.node.name)) is not None:
        return why
    if ovs and not ovs <= set(u.node.ovs_bridges):
        return f"node(s) didn't have the Open vSwitch bridge {', '.join(sorted(ovs - set(u.node.ovs_bridges)))}"
    if bridges and not bridges <= set(u.node.allowed_bridges):
        return f"node(s) didn't allow the bridge {', '.join(sorted(bridges - set(u.node.allowed_bridges)))}"
    if vlan_ports and not u.node.vlan_access_ports:
        return "node(s) couldn't make VLAN access ports on a bridge"
    if u.used_memory + want.memory > u.node.memory:
        return "Insufficient memory"
    if u.used_vcpus + want.vcpus > u.vcpu_capacity:
        return "Insufficient cpu"
    # emptyDisks are sparse, but each may fill up: the node's free disk must hold them all at full
    # size (its free space already counts what the others hold today, so this errs on the safe side)
    if want.disk and u.node.free_disk is not None and u.used_disk + want.disk > u.node.free_disk:
        return "Insufficient disk"
    return None


def _disliked(spec: VMSpec, node: Node) -> int:
    """How many of the node's PreferNoSchedule taints the instance does not tolerate: a node with fewer
    comes first, whatever its allocation (kube-scheduler's TaintToleration score)."""
    return len(untolerated(node.taints, spec.tolerations, ("PreferNoSchedule",))) if node.taints else 0


def _score(u: NodeUsage, want: Request) -> float:
    free_mem = 1 - (u.used_memory + want.memory) / u.node.memory
    free_cpu = 1 - (u.used_vcpus + want.vcpus) / u.vcpu_capacity
    return (free_mem + free_cpu) / 2


def tie_key(name: str) -> str:
    """Among nodes that score alike and hold as many VMIs, the one with the smallest key wins: the
    smallest name, a name before any longer one it begins (the order this tie-break always had). The
    sentinel lies above every character a node's name may hold."""
    return name + "\U0010ffff"


def _tie_order(u: NodeUsage) -> str:
    return tie_key(u.node.name)


def place(spec: VMSpec, nodes: Iterable[NodeUsage], only: str | None = None,
          ovs: frozenset[str] = frozenset(), *, enough: int | None = None, bridges: frozenset[str] = frozenset(),
          vlan_ports: bool = False, affinity: Verdict | None = None) -> Placement:
    """only: the node the VM's volumes are on (scheduler.volumes), if they are on one; ovs: the Open
    vSwitch bridges its networks need, bridges the host bridges (each one its operator allowed there),
    vlan_ports whether one is a bridge network on a VLAN (scheduler.networkneeds); affinity: the
    verdict of its affinity (scheduler.affinityplan), whose points rank nodes before their allocation.

    enough: stop looking once this many nodes fit and score only those (kube-scheduler's
    percentageOfNodesToScore), for a caller that hands the nodes least allocated first
    (scheduler.capacity); ``nodes`` is only read that far. A VM no node fits has been checked
    against all of them, so the reason counts every node. None: every node is scored."""
    reasons: Counter[str] = Counter()
    want = Request.of(spec)
    fits = 0
    scanned = 0
    best: NodeUsage | None = None
    best_key: tuple[int, int, float, int] = (0, 0, 0.0, 0)
    ties: list[NodeUsage] = []
    for u in nodes:
        scanned += 1
        reason = unfit_reason(spec, u, only, ovs, want, bridges, vlan_ports, affinity)
        if reason is not None:
            reasons[reason] += 1
            continue
        fits += 1
        key = (affinity.points.get(u.node.name, 0) if affinity is not None else 0, -_disliked(spec, u.node),
               _score(u, want), -u.vmis)
        if best is None or key > best_key:
            best, best_key, ties = u, key, []
        elif key == best_key:
            ties.append(u)
        if enough is not None and fits >= enough:
            break
    if best is None:
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        return Placement(None, f"0/{scanned} nodes are available" + (f": {detail}." if detail else "."), scanned)
    # Highest score wins; ties go to the node with fewer VMIs, then by name (tie_key), so results are
    # stable. Not keyed by a list of the name's character codes, as it was: with alike nodes every
    # decision has ties, and building those lists was 4 % of the scheduler (py-spy).
    if ties:
        best = min([best, *ties], key=_tie_order)
    if enough is not None and fits >= enough:
        return Placement(best.node.name, f"{fits} of the {scanned} least allocated nodes looked at fit", scanned)
    return Placement(best.node.name, f"{fits}/{scanned} nodes fit", scanned)
