"""BENCHMARK TOOLING: what a burst of binds left behind, read from the stored VMIs and nodes (pure).

Independent of the scheduler's own accounting (scheduler.capacity), so a bench that prints it checks
the binder rather than repeating it: each node's bound VMIs' memory against the memory it offers, their
vCPUs against its CPUs times the cluster's allocation ratio (KubeVirt's cpuAllocationRatio), and how far
the busiest or idlest node is from an even share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.quantity import parse_bytes
from proto.state import FINAL_PHASES, VMI, Node


@dataclass(frozen=True)
class PlacementCheck:
    bound: int
    nodes: int
    over_memory: int  # bytes the most overcommitted node holds beyond what it offers: must be 0
    over_vcpus: int  # vCPUs beyond its CPUs x the ratio, likewise
    ideal: float  # bound VMIs per node, evenly
    spread_pct: float  # the largest deviation of a node's count from ideal, in % of ideal

    def line(self) -> str:
        return (f"placement: {self.bound} VMIs on {self.nodes} nodes; max over capacity: memory "
                f"{self.over_memory} bytes, vCPUs {self.over_vcpus}; spread: max deviation from the ideal "
                f"{self.ideal:.2f} per node: {self.spread_pct:.1f} %")


def check(vmis: Iterable[VMI], nodes: Mapping[str, Node], cpu_ratio: int) -> PlacementCheck:
    """nodes: those the VMIs could be placed on. VMIs bound elsewhere (to a node left out, such as one
    they were pinned to), unbound or ended ones are not counted."""
    memory: Counter[str] = Counter()
    vcpus: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for vmi in vmis:
        node = vmi.node_name
        if node is None or node not in nodes or vmi.phase in FINAL_PHASES:
            continue
        cpu = vmi.spec.cpu
        memory[node] += parse_bytes(vmi.spec.memory)
        vcpus[node] += cpu.cores * cpu.sockets * cpu.threads
        count[node] += 1
    bound = sum(count.values())
    ideal = bound / len(nodes) if nodes else 0.0
    return PlacementCheck(
        bound=bound, nodes=len(nodes),
        over_memory=max([0, *(memory[n] - node.memory for n, node in nodes.items())]),
        over_vcpus=max([0, *(vcpus[n] - node.cpus * cpu_ratio for n, node in nodes.items())]),
        ideal=ideal,
        spread_pct=max((abs(count[n] - ideal) / ideal * 100 for n in nodes), default=0.0) if ideal else 0.0)
