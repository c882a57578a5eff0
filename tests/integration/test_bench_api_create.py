"""bench/api_create.py, small, so it cannot rot: 300 VMs created through the API by 30 concurrent
clients against two scheduler processes (API replicas in the queue group; one leads and makes each
VM's instance). Every create answered with the VM, each stored once. (Its timings are read by people
from full runs, never asserted here.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_a_small_run_creates_every_vm_once() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "api_create.py"), "--vms", "300", "--clients", "30",
                           "--replicas", "2", "--strategy", "Always"],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert "VMs stored: 300/300" in out, out
    assert re.search(r"creates/s: \d+ \(\d+\.\d s\); busy answers retried: \d+", out), out
    assert re.search(r"request latency: P50 \d+\.\d ms, P99 \d+\.\d ms", out), out
