"""bench/lane.py's arithmetic: the lane's percentiles and a launch split into its stages."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from proto.spec import VMSpec
from proto.state import VMI, Condition, Phase
from tests.conftest import REPO


def load_lane() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # its neighbours (boxspeed), as running it as a script finds them
    spec = importlib.util.spec_from_file_location("bench_lane", REPO / "bench" / "lane.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lane"] = module
    spec.loader.exec_module(module)
    return module


lane = load_lane()


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (lane.percentile(values, 50), lane.percentile(values, 95), lane.percentile(values, 100)) == (50, 95, 100)
    assert lane.percentile([3.0], 99) == 3.0


def test_a_running_vmi_splits_into_its_stages() -> None:
    vmi = VMI(name="lane-000", uid="u1", spec=VMSpec(name="lane-000"), created_at=100.0, phase=Phase.RUNNING,
              conditions=[Condition(type="PodScheduled", status="True", last_transition_time=100.5)],
              launcher_started_at=101.0, launcher_ready_at=101.25, started_at=103.0)
    assert lane.stages(vmi) == pytest.approx({"accepted->bound": 0.5, "bound->launcher process": 0.5,
                                              "launcher process->ready": 0.25, "launcher ready->Running": 1.75})


def test_a_vmi_without_a_stage_is_left_out() -> None:
    vmi = VMI(name="lane-000", uid="u1", spec=VMSpec(name="lane-000"), created_at=100.0, started_at=103.0)
    assert lane.stages(vmi) is None


def test_a_manifest_is_the_seed_vmi_renamed_and_maybe_pinned() -> None:
    body = lane.manifest("lane-007", "node2")
    assert b'"name": "lane-007"' in body and b'"kubernetes.io/hostname": "node2"' in body
    assert b"cirros-container-disk-demo" in body and b'"nodeSelector"' not in lane.manifest("lane-001", None)
