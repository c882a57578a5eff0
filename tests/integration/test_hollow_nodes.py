"""bench/hollow_nodes.py, small (50 hollow nodes, 500 VMIs, its own nats-server and the real
scheduler): every VMI Running, no node hears of another node's VMIs, none reported on the wrong
node, none over capacity. The figures it prints are not checked here (no timings in tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from servicekit import cpugroup
from tests.benchrun import run_bench

pytestmark = pytest.mark.integration


def test_fifty_hollow_nodes_run_five_hundred_vmis_each_hearing_only_its_own() -> None:
    out = run_bench("hollow_nodes.py", "--nodes", "50", "--vmis", "500", "--window", "2", "--timeout", "240",
                    timeout=400)
    found = re.search(r"hollow nodes: (\d+), VMIs: (\d+), Running: (\d+), updates about another node's VMIs: "
                      r"(\d+), reported on the wrong node: (\d+)", out)
    assert found, out
    assert tuple(int(g) for g in found.groups()) == (50, 500, 500, 0, 0)
    assert re.search(r"box speed: reference work \d+ ms before the run, \d+ ms after", out), out
    # the 100 VMIs pinned to the solo node are not in the share, nor is it
    assert re.search(r"placement: 500 VMIs on 50 nodes; max over capacity: memory 0 bytes, vCPUs 0; ", out), out
    assert "one hollow handler with 100 VMs:" in out and "% of a core" in out
    spent = re.search(r"CPU from the first create to all bound .*?nats-server ([\d.]+) CPU-s.*?scheduler ([\d.]+) "
                      r"CPU-s", out)
    assert spent, out
    assert float(spent.group(2)) > 0, out  # the scheduler bound 500 VMIs: not for free


def test_hollow_nodes_run_vmis_written_into_the_bucket_by_hand() -> None:
    """--create bus: standalone VMIs written into the vmis bucket by an admin's client (no API): the
    scheduler binds them, each node runs its own and hears of no other's. --nodes-cpu-weight: the hollow
    workers in a CPU group of their own, below the control plane."""
    out = run_bench("hollow_nodes.py", "--nodes", "20", "--vmis", "200", "--window", "2", "--timeout", "240",
                    "--no-solo", "--create", "bus", "--nodes-cpu-weight", "128", timeout=400)
    found = re.search(r"hollow nodes: (\d+), VMIs: (\d+), Running: (\d+), updates about another node's VMIs: "
                      r"(\d+), reported on the wrong node: (\d+)", out)
    assert found, out
    assert tuple(int(g) for g in found.groups()) == (20, 200, 200, 0, 0)
    assert re.search(r"created in [\d.]+ s \(standalone VMIs written into the vmis bucket", out), out
    # both workers ran in their CPU group, and it went with them
    assert re.search(r"hollow processes: (\d+) of \1 in a CPU group of weight 128", out), out
    root = cpugroup.cpu_mount(Path("/proc/self/mountinfo").read_text())
    assert root is not None and not list(root.glob("virtbus-bench-hollow-*"))
    # the binds read back from the vmis bucket: all 200, each once, so the control plane's figure is there
    assert re.search(r"all bound by the control plane in [\d.]+ s \([\d]+ binds/s", out), out
    assert re.search(r"all copied to the nodes' shards by the control plane in [\d.]+ s \([\d]+ copies/s", out), out
    # read back from the buckets: no node holds more than it offers, and 200 over 20 alike nodes is 10 each
    assert re.search(r"placement: 200 VMIs on 20 nodes; max over capacity: memory 0 bytes, vCPUs 0; "
                     r"spread: max deviation from the ideal 10\.00 per node: 0\.0 %", out), out
