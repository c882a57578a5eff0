"""The keepers' loop (launcher.keeperloop): a look is taken when woken, and taken again after the retry
while it fails or leaves something to do; once settled, only a new wake brings another."""

from __future__ import annotations

import asyncio

from launcher.keeperloop import first_line, keep


async def test_a_look_that_fails_or_is_unsettled_is_taken_again_until_settled() -> None:
    outcomes: list[bool | Exception] = [RuntimeError("libvirt: gone\nmore"), False, True]
    looks = 0

    async def look() -> bool:
        nonlocal looks
        looks += 1
        outcome = outcomes.pop(0) if outcomes else True
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    wake = asyncio.Event()
    task = asyncio.create_task(keep(wake, look, what="test step", retry=0.01))
    await asyncio.sleep(0.05)
    assert looks == 0  # nothing until woken
    wake.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if looks == 3 and not wake.is_set():
            break
    await asyncio.sleep(0.05)
    assert looks == 3  # failed, unsettled, settled: then it waits
    wake.set()
    await asyncio.sleep(0.05)
    assert looks == 4
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_an_error_is_one_bounded_line() -> None:
    assert first_line(RuntimeError("a\nb")) == "a"
    assert first_line(RuntimeError()) == "RuntimeError"
    assert len(first_line(RuntimeError("x" * 999), 50)) == 50


async def test_a_wake_while_unsettled_looks_again_before_the_retry() -> None:
    """What an unsettled look waits for (a volume's record, heard) brings the next look at once."""
    looks = 0

    async def look() -> bool:
        nonlocal looks
        looks += 1
        return looks > 1

    wake = asyncio.Event()
    task = asyncio.create_task(keep(wake, look, what="test step", retry=30.0))
    wake.set()
    await asyncio.sleep(0.05)
    assert looks == 1  # unsettled: the retry is far off
    wake.set()
    await asyncio.sleep(0.05)
    assert looks == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
