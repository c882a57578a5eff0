"""bench/hollow_nodes.py, small (50 hollow nodes, 500 VMIs, its own nats-server and the real
scheduler): every VMI Running, no node hears of another node's VMIs, none reported on the wrong
node. The figures it prints are not checked here (no timings in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_fifty_hollow_nodes_run_five_hundred_vmis_each_hearing_only_its_own() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "hollow_nodes.py"), "--nodes", "50", "--vmis", "500",
                           "--window", "2", "--timeout", "240"], capture_output=True, text=True, timeout=400,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"hollow nodes: (\d+), VMIs: (\d+), Running: (\d+), updates about another node's VMIs: "
                      r"(\d+), reported on the wrong node: (\d+)", done.stdout)
    assert found, done.stdout
    assert tuple(int(g) for g in found.groups()) == (50, 500, 500, 0, 0)
    assert "one hollow handler with 100 VMs:" in done.stdout and "% of a core" in done.stdout
