"""servicekit.store.all_of: the buckets a connect makes, made at once; every one ends before a failure
is raised, so none is left half made behind the caller's retry."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.store import all_of


async def test_all_at_once_in_order_and_the_first_failure_after_all_have_ended() -> None:
    running, ended = 0, []

    async def step(name: str, delay: float, fail: bool = False) -> str:
        nonlocal running
        running += 1
        await asyncio.sleep(delay)
        peak.append(running)
        running -= 1
        ended.append(name)
        if fail:
            raise TimeoutError(name)
        return name

    peak: list[int] = []
    assert await all_of([step("a", 0.03), step("b", 0.01), step("c", 0.02)]) == ["a", "b", "c"]
    assert max(peak) == 3  # at once, not one after another
    ended.clear()
    with pytest.raises(TimeoutError, match="b"):
        await all_of([step("a", 0.03), step("b", 0.01, fail=True), step("c", 0.02, fail=True)])
    assert sorted(ended) == ["a", "b", "c"]  # the slow one ended too before the failure was raised
