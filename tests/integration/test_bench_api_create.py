"""bench/api_create.py, small, so it cannot rot: 300 VMs created through the API by 30 concurrent
clients against two scheduler processes (API replicas in the queue group; one leads and makes each
VM's instance). Every create answered with the VM, each stored once. (Its timings are read by people
from full runs, never asserted here.)"""

from __future__ import annotations

import re

import pytest

from tests.benchrun import run_bench

pytestmark = pytest.mark.integration


def test_a_small_run_creates_every_vm_once() -> None:
    out = run_bench("api_create.py", "--vms", "300", "--clients", "30", "--replicas", "2", "--strategy", "Always",
                    timeout=300)
    assert "VMs stored: 300/300" in out, out
    assert re.search(r"creates/s: \d+ \(\d+\.\d s\); busy answers retried: \d+", out), out
    assert re.search(r"request latency: P50 \d+\.\d ms, P99 \d+\.\d ms", out), out
