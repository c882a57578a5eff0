"""BENCHMARK TOOLING: what one bind decision costs the binder for a VMI with an affinity or a topology
spread constraint, against one without, with many nodes and instances placed (pure: the binder's own
capacity index, scheduler.affinityplan and scheduler.placement, no bus).

    .venv/bin/python bench/affinity.py --nodes 1000 --vmis 10000 --groups 100

Every placed instance carries ``app=a<i mod groups>``; the VMI decided selects one group (so
``vmis / groups`` instances), as a replica set keeping apart from its own does.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from proto.labels import LabelSelector
from proto.quantity import parse_bytes
from proto.spec import Affinity, PodAffinityTerm, TopologySpreadConstraint, VMSpec
from proto.state import VMI, Node, Phase
from scheduler.affinityplan import judge
from scheduler.capacity import CapacityIndex
from scheduler.placement import place

HOST = "kubernetes.io/hostname"


def filled(nodes: int, vmis: int, groups: int) -> CapacityIndex:
    index = CapacityIndex()
    records = {f"n{i}": Node(name=f"n{i}", cpus=64, memory=parse_bytes("256Gi"), kvm=False, heartbeat=0.0,
                             started_at=0.0, labels={HOST: f"n{i}"}) for i in range(nodes)}
    index.sync_nodes(records, dict.fromkeys(records, True))
    for i in range(vmis):
        spec = VMSpec(name=f"v{i}", labels={"app": f"a{i % groups}"})
        index.observe(f"v{i}", VMI(name=f"v{i}", uid=str(i), spec=spec, created_at=0.0, phase=Phase.RUNNING,
                                   node_name=f"n{i % nodes}"))
    return index


def kinds() -> dict[str, VMSpec]:
    chosen = LabelSelector(match_labels={"app": "a7"})
    term = PodAffinityTerm(label_selector=chosen, topology_key=HOST)
    spread = TopologySpreadConstraint(max_skew=1, topology_key=HOST, when_unsatisfiable="DoNotSchedule",
                                      label_selector=chosen)
    return {"none": VMSpec(name="x", labels={"app": "a7"}),
            "podAntiAffinity": VMSpec(name="x", labels={"app": "a7"}, affinity=Affinity(anti_required=[term])),
            "topologySpreadConstraints": VMSpec(name="x", labels={"app": "a7"}, topology_spread_constraints=[spread])}


def per_decision(index: CapacityIndex, spec: VMSpec, runs: int,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds a decision takes, the binder's way: judged when it has terms, then placed."""
    vmi = VMI(name="x", uid="x", spec=spec, created_at=0.0)
    index.matching(LabelSelector(match_labels={"app": "none"}))  # its label index built, as after the first
    start = clock()
    for _ in range(runs):
        terms = spec.affinity is not None or spec.topology_spread_constraints
        verdict = judge(vmi, index.node_records, index.matching, index.holders()) if terms else None
        choice = place(spec, index.candidates(), enough=16, affinity=verdict)
        assert choice.node is not None, choice.message
    return (clock() - start) / runs


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--vmis", type=int, default=10000)
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    index = filled(args.nodes, args.vmis, args.groups)
    lines = [f"one bind decision at {args.nodes} nodes and {args.vmis} instances placed, the VMI's terms selecting "
             f"{args.vmis // args.groups} of them:"]
    for name, spec in kinds().items():
        lines.append(f"  {name}: {per_decision(index, spec, args.runs) * 1000:.2f} ms")
    for line in lines:
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    main()
