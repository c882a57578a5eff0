"""bench/affinity.py: what a bind decision with affinity or spread constraints costs; its small run is
the CI version of the bench, so it cannot rot."""

from __future__ import annotations

import re
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from affinity import main  # noqa: E402 - bench/, as the benches


def test_a_small_run_prints_a_cost_for_each_kind_of_decision() -> None:
    lines = main(["--nodes", "20", "--vmis", "200", "--groups", "10", "--runs", "3"])
    assert lines[0].startswith("one bind decision at 20 nodes and 200 instances placed")
    costs = {m[1]: float(m[2]) for line in lines[1:] if (m := re.fullmatch(r"  (\w+): ([\d.]+) ms", line))}
    assert set(costs) == {"none", "podAntiAffinity", "topologySpreadConstraints"}
    assert all(cost >= 0 for cost in costs.values())
