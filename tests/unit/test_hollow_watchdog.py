"""bench/hollow_fleet.py's watchdog and bench/hollow_nats.py's log summary: a hollow-node run whose
nodes lost their connections, or that stopped moving, fails saying so with counts instead of
waiting out its timeout; and what nats-server logged about the clients it dropped is counted."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from hollow_fleet import BenchFailed, Fleet, Watchdog, Worker  # noqa: E402 - bench/, as the bench imports it
from hollow_nats import trouble  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fleet_of(tmp_path: Path, *states: dict[str, object]) -> Fleet:
    fleet = Fleet()
    for i, state in enumerate(states):
        fleet.workers.append(Worker(proc=cast(Any, None), log=tmp_path / f"w{i}.log", count=100, last=dict(state)))
    return fleet


def test_nodes_disconnected_past_the_grace_fail_the_run_with_counts(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path, {"registered": 100, "connected": 100}, {"registered": 100, "connected": 100})
    clock = Clock()
    dog = Watchdog(fleet, lost_s=30, stall_s=1000, clock=clock)
    dog.check("binding")
    fleet.workers[1].last.update(connected=3, reconnects=0)
    for t in (1, 20, 30):  # a reconnect may take a moment
        clock.now = t
        dog.check("binding")
    clock.now = 32
    with pytest.raises(BenchFailed, match=r"binding: 97 hollow nodes disconnected .*\(200 of 200 hollow nodes "
                                          r"registered, 103 connected"):
        dog.check("binding")


def test_a_connection_regained_within_the_grace_is_no_failure(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path, {"registered": 100, "connected": 90})
    clock = Clock()
    dog = Watchdog(fleet, lost_s=30, stall_s=1000, clock=clock)
    dog.check("binding")
    clock.now = 20
    fleet.workers[0].last.update(connected=100, reconnects=10)
    dog.check("binding")
    clock.now = 45
    fleet.workers[0].last.update(connected=99)
    dog.check("binding")  # lost again at 45: its own 30 s start there


def test_no_count_moving_fails_as_a_stall_but_a_steady_state_may_rest(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path, {"registered": 50, "connected": 50, "bound": 10})
    clock = Clock()
    dog = Watchdog(fleet, lost_s=30, stall_s=60, clock=clock)
    dog.check("registering")
    clock.now = 50
    fleet.workers[0].last.update(registered=60, connected=60)
    dog.check("registering")
    clock.now = 100
    dog.check("registering")
    dog.check("steady state", moving=False)
    clock.now = 200
    dog.check("steady state", moving=False)
    clock.now = 261
    with pytest.raises(BenchFailed, match=r"registering: no progress for 60 s \(60 of 100 hollow nodes registered"):
        dog.check("registering")


def test_a_worker_that_died_or_gave_up_fails_the_run_with_its_words(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path, {"registered": 10, "connected": 10, "failure": "registration: ApiError: refused"})
    with pytest.raises(BenchFailed, match="hollow worker 0: registration: ApiError: refused"):
        Watchdog(fleet).check("registering")
    fleet = fleet_of(tmp_path, {"registered": 10, "connected": 10})
    (tmp_path / "w0.log").write_text("Traceback ...\nMemoryError\n")
    fleet.workers[0].exited = 1
    with pytest.raises(BenchFailed, match=r"(?s)hollow worker 0 exited with 1 .*MemoryError"):
        Watchdog(fleet).check("registering")


def test_the_servers_log_is_summed_by_kind(tmp_path: Path) -> None:
    log = tmp_path / "nats0.log"
    log.write_text(
        "[812] 2026/11/29 20:00:00.000001 [INF] Server is ready\n"
        '[812] 2026/11/29 20:00:01.000001 [INF] 127.0.0.1:40001 - cid:12 - "v2.4:python:virtbus-hollow-hollow-0001"'
        " - Slow Consumer Detected: WriteDeadline of 10s exceeded with 3 chunks of 81234 total bytes.\n"
        '[812] 2026/11/29 20:00:01.000002 [INF] 127.0.0.1:40002 - cid:13 - "v2.4:python:virtbus-hollow-hollow-0002"'
        " - Slow Consumer Detected: WriteDeadline of 10s exceeded with 1 chunks of 12 total bytes.\n"
        "[812] 2026/11/29 20:00:02.000001 [WRN] 127.0.0.1:40003 - cid:14 - Readloop processing time: 2.1s\n")
    summary = trouble([log, tmp_path / "absent.log"])
    assert "2 x [INF] ADDR - cid:N - \"…\" - Slow Consumer Detected: WriteDeadline of Ns exceeded" in summary
    assert "1 x [WRN] ADDR - cid:N - Readloop processing time: Ns" in summary
    assert "Server is ready" not in summary
    log.write_text("[812] 2026/11/29 20:00:00.000001 [INF] Server is ready\n")
    assert trouble([log]) == "nats-server logged no warnings, errors or dropped clients"
    starting = "[813] 2026/11/29 20:00:00.000001 [WRN] Waiting for routing to be established...\n"
    log.write_text(starting + "[813] 2026/11/29 20:00:09.000001 [ERR] Stale Connection: cid:9\n")
    assert trouble([log], [len(starting)]) == "nats-server logged:\n  1 x [ERR] Stale Connection: cid:N"
