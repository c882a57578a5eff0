"""bench/launchcost.py: each launch's CPU to Running, read back from the launchers' logs as the launcher
writes them, for the launches of this run only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import structlog
import structlog.testing

from launcher.launchclock import LaunchClock
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from lane import percentile  # noqa: E402 - bench/, as the benches
from launchcost import LaunchCpu, parse, read, summary  # noqa: E402


def logged(uid: str, clock: LaunchClock, **others: float | None) -> str:
    """The line a launcher writes: its real LaunchClock's event, as JSON with the uid its logger binds
    (servicekit.logs renders each event so)."""
    with structlog.testing.capture_logs() as events:
        clock.log(**others)
    return "".join(json.dumps({**e, "uid": uid}) + "\n" for e in events)


def line(uid: str, launcher: dict[str, object], **others: object) -> str:
    return json.dumps({"launcher": launcher, "event": "launch cpu", "uid": uid, **others}) + "\n"


def test_a_launchers_own_line_is_read_back() -> None:
    clock = LaunchClock(None)
    clock.mark("ready")
    clock.mark("reported")
    text = logged("u1", clock, libvirtd=0.03, qemu=0.04)
    found = parse(text.splitlines(), {"u1"})
    assert set(found) == {"u1"}
    cost = found["u1"]
    assert (cost.libvirtd, cost.qemu) == (0.03, 0.04)
    assert cost.launcher == max(clock.cpu().values())
    assert cost.total == pytest.approx(cost.launcher + cost.children + 0.07)


def test_only_this_runs_launches_count_and_a_launch_missing_a_process_is_left_out() -> None:
    lines = [
        line("old", {"reported": 0.5}, children=0.0, libvirtd=0.5, qemu=0.5),  # the same name, an earlier run
        '{"event": "launch stages", "uid": "u1", "ready": 0.1}',
        "not json at all, launch cpu",
        '{"event": "launch cpu", "uid": "u1", "launcher": {"ready"',  # a log cut mid-line
        line("u1", {"ready": 0.02, "reported": 0.05}, children=0.01, libvirtd=0.03, qemu=0.04),
        line("u2", {"reported": 0.06}, children=0.0, libvirtd=0.03),  # QEMU's figure missing
        line("u3", {"reported": "soon"}, children=0.0, libvirtd=0.03, qemu=0.04),
        line("u4", {"reported": 0.05}, children=-1, libvirtd=0.03, qemu=0.04),
    ]
    assert parse(lines, {"u1", "u2", "u3", "u4"}) == {"u1": LaunchCpu(0.05, 0.01, 0.03, 0.04)}


def test_read_takes_every_launcher_log_of_the_lab(tmp_path: Path) -> None:
    (tmp_path / "launcher-node1-lane-000.log").write_text(
        line("u1", {"reported": 0.05}, children=0.01, libvirtd=0.03, qemu=0.04))
    (tmp_path / "launcher-node2-lane-001.log").write_text(
        line("u2", {"reported": 0.07}, children=0.01, libvirtd=0.05, qemu=0.06))
    (tmp_path / "handler-node1.log").write_text(line("u3", {"reported": 1.0}, children=0, libvirtd=1, qemu=1))
    assert set(read(tmp_path, {"u1", "u2", "u3"})) == {"u1", "u2"}


def test_summary_says_how_many_were_found_and_the_medians() -> None:
    costs = [LaunchCpu(0.05, 0.01, 0.03, 0.04), LaunchCpu(0.06, 0.01, 0.04, 0.05), LaunchCpu(0.20, 0.02, 0.10, 0.30)]
    text = summary(costs, 4, percentile)
    assert text.startswith("launch CPU to Running, P50 of 3 of 4 launches (the launchers' logs): "
                           "launcher 0.060 s, its subprocesses 0.010, libvirtd 0.040, QEMU 0.050; "
                           "all 0.160 s, P95 0.620 s"), text
    assert summary([], 4, percentile) == "launch CPU to Running: none of the 4 launches found in the launchers' logs"
