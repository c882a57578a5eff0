"""servicekit.restarting: a part that fails or returns is said, by name, and started again, later each
time it keeps ending at once; a cancellation ends it for good."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from servicekit.restarting import keep_running


async def test_a_failing_part_is_said_and_started_again_with_a_growing_pause() -> None:
    now = [0.0]
    pauses: list[float] = []
    runs: list[int] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    async def part() -> None:
        runs.append(len(runs))
        if len(runs) == 3:
            return  # a forever loop that returned: said too
        if len(runs) == 5:
            now[0] += 500  # ran a good while, then failed: soon again
        if len(runs) < 7:
            raise RuntimeError(f"boom {len(runs)}")
        await asyncio.Event().wait()

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(keep_running("guest fence", part, first_pause=2, longest_pause=10,
                                                clock=lambda: now[0], sleep=sleep))
        for _ in range(50):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(runs) == 7
    assert pauses == [2, 4, 8, 10, 2, 4]
    assert [e["part"] for e in logs] == ["guest fence"] * 6
    assert [e["log_level"] for e in logs] == ["error"] * 6
    assert sum("returned" in e["event"] for e in logs) == 1
