"""bench/placement_check.py: what the benches print about a burst's placement, read from stored VMIs and
nodes, independently of the scheduler's own accounting."""

from __future__ import annotations

import sys

import pytest

from proto.spec import Cpu, VMSpec
from proto.state import VMI, Node, Phase
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from placement_check import check  # noqa: E402 - bench/, as the benches import it

GI = 2**30


def node(name: str, cpus: int = 2, memory: int = 4 * GI) -> Node:
    return Node(name=name, cpus=cpus, memory=memory, kvm=False, heartbeat=0.0, started_at=0.0)


def vmi(name: str, on: str | None, memory: str = "1Gi", cores: int = 1, phase: Phase = Phase.RUNNING) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, memory=memory, cpu=Cpu(cores=cores)), created_at=0.0,
               node_name=on, phase=phase)


def test_an_even_placement_within_capacity() -> None:
    nodes = {"n1": node("n1"), "n2": node("n2")}
    placed = check([vmi(f"v{i}", f"n{i % 2 + 1}") for i in range(8)], nodes, cpu_ratio=10)
    assert (placed.bound, placed.nodes, placed.over_memory, placed.over_vcpus) == (8, 2, 0, 0)
    assert placed.ideal == 4.0 and placed.spread_pct == 0.0
    assert "max over capacity: memory 0 bytes, vCPUs 0" in placed.line()
    assert "spread: max deviation from the ideal 4.00 per node: 0.0 %" in placed.line()


def test_memory_and_vcpus_beyond_a_node_are_reported_by_how_much() -> None:
    nodes = {"n1": node("n1", cpus=1), "n2": node("n2", cpus=1)}
    # n1: 5 GiB on 4 GiB; 12 vCPUs on 1 CPU x 10
    vmis = [vmi("a", "n1", memory="3Gi", cores=8), vmi("b", "n1", memory="2Gi", cores=4), vmi("c", "n2")]
    placed = check(vmis, nodes, cpu_ratio=10)
    assert (placed.over_memory, placed.over_vcpus) == (GI, 2)
    assert placed.spread_pct == pytest.approx(100 / 3)  # 2 and 1 against 1.5 each


def test_ended_unbound_and_elsewhere_bound_vmis_hold_nothing_here() -> None:
    nodes = {"n1": node("n1", memory=GI)}
    vmis = [vmi("done", "n1", memory="4Gi", phase=Phase.SUCCEEDED), vmi("pending", None, memory="4Gi"),
            vmi("pinned", "solo", memory="4Gi"), vmi("here", "n1", memory="1Gi")]
    placed = check(vmis, nodes, cpu_ratio=10)
    assert (placed.bound, placed.over_memory, placed.spread_pct) == (1, 0, 0.0)


def test_nothing_bound_is_an_even_nothing() -> None:
    placed = check([], {"n1": node("n1")}, cpu_ratio=10)
    assert (placed.bound, placed.ideal, placed.spread_pct) == (0, 0.0, 0.0)
