"""bench/pod_plumbing.py, small, so it cannot rot: three pods plumbed as a launch plumbs them, each
reaching its gateway over the node's bridge, and not one of the bench's namespaces left after it.
(Its CPU figures are read by people from full runs, never asserted here.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_three_pods_are_plumbed_and_nothing_is_left() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8)")
    before = set(os.listdir("/run/netns")) if Path("/run/netns").is_dir() else set()
    done = subprocess.run([sys.executable, str(REPO / "bench" / "pod_plumbing.py"), "--pods", "3"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert "pods: 3, reaching their gateway: 3" in done.stdout, done.stdout
    assert "CPU per launch: namespace" in done.stdout, done.stdout
    after = set(os.listdir("/run/netns")) if Path("/run/netns").is_dir() else set()
    assert {n for n in after - before if n.startswith("vbbench-")} == set()
