"""A launcher's end is noticed the moment it happens (a pidfd on the loop), and only once the
launcher no longer counts as alive (a forked one's exit code comes a moment later): real processes."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from handler.exitwatch import ExitWatch

pytestmark = pytest.mark.integration


class Proc:
    """A launcher as handler.launchers.Launcher looks: alive until its exit code is known, which
    comes ``late`` seconds after the process ended (as a fork server's message does)."""

    def __init__(self, seconds: float, late: float = 0.0) -> None:
        self.proc = subprocess.Popen(["sleep", str(seconds)])
        self.pid = self.proc.pid
        self.late = late
        self.ended_at: float | None = None

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return time.monotonic() < self.ended_at + self.late


async def test_an_ending_launcher_is_reconciled_at_once_and_only_once_it_is_seen_gone() -> None:
    told: list[tuple[str, float]] = []
    watch = ExitWatch(lambda name: told.append((name, time.monotonic())))
    quick, late, running = Proc(0.2), Proc(0.2, late=0.3), Proc(30)
    try:
        watch.watch("quick", quick)
        watch.watch("late", late)
        watch.watch("running", running)
        watch.watch("quick", quick)  # watched twice: told once
        for _ in range(300):
            if len(told) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(name for name, _ in told) == ["late", "quick"]
        when = dict(told)
        assert late.ended_at is not None and when["late"] >= late.ended_at + 0.3  # not before it counts as gone
        assert not late.alive() and not quick.alive()
        await asyncio.sleep(0.2)
        assert len(told) == 2 and "running" in watch.fds  # one that runs on is not reported
    finally:
        watch.close()
        for p in (quick, late, running):
            p.proc.kill()
            p.proc.wait()
    assert watch.fds == {}
