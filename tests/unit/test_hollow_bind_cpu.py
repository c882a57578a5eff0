"""bench/hollow_nodes.py's CPU lines: what binding cost each kind of process per VM, and the rates those
costs leave room for on this box's cores."""

from __future__ import annotations

import os
import re
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from hollow_nodes import bind_cpu_lines  # noqa: E402 - bench/, as the bench imports it


def test_costs_per_vm_and_the_rates_they_leave_room_for() -> None:
    cpu = {"nats-server": 5.0, "scheduler": 6.0, "hollow processes": 8.0, "this bench process": 1.0}
    spent, caps = bind_cpu_lines(cpu, 10_000, 10.0)
    cores = os.cpu_count() or 1
    assert "nats-server 5.0 CPU-s (0.50 ms per VM)" in spent
    assert "scheduler 6.0 CPU-s (0.60 ms per VM)" in spent
    assert f"busy {round(100 * 20.0 / 10.0 / cores)} % of the cores" in spent
    found = re.search(r"everything here (\d+); nats-server and the scheduler alone (\d+); "
                      r"the scheduler alone on one core (\d+)", caps)
    assert found, caps
    # 2 ms of CPU per VM in all; 1.1 ms of it the control plane's; 0.6 ms the scheduler's
    assert [int(g) for g in found.groups()] == [round(cores * 500), round(cores * 1000 / 1.1), round(1000 / 0.6)]


def test_nothing_measured_prints_nothing() -> None:
    assert bind_cpu_lines({}, 10_000, 10.0) == []
    assert bind_cpu_lines({"scheduler": 1.0}, 0, 10.0) == []
