"""servicekit.volumedata.volume_lock: a volume's file lock, held by another process meanwhile. Waiting
for it must not hold the loop's default threads (other blocking calls still run), waiters take it one
at a time once it is free, and a cancelled wait leaves the lock free."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit.volumedata import volume_lock

POLL = 0.01


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The lock of volume ``vol.qcow2`` taken through another open file, as another process holds it."""
    path = tmp_path / "vol.qcow2"
    fd = os.open(tmp_path / ".vol.qcow2.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield path, fd
    os.close(fd)


def free(path: Path) -> bool:
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


async def test_waiters_leave_the_default_threads_free_and_take_it_in_turn(held: tuple[Path, int]) -> None:
    path, fd = held
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    inside, most, done = 0, 0, []

    async def waiter(i: int) -> None:
        nonlocal inside, most
        async with volume_lock(path, poll=POLL):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(POLL * 2)
            inside -= 1
            done.append(i)

    waiters = [asyncio.create_task(waiter(i)) for i in range(8)]
    await asyncio.sleep(POLL * 5)
    # eight waiters, two default threads: a blocking call still gets one at once
    assert await asyncio.wait_for(asyncio.to_thread(os.getpid), 2.0) == os.getpid()
    assert done == [] and not any(w.done() for w in waiters)
    fcntl.flock(fd, fcntl.LOCK_UN)  # the other process is done with it
    await asyncio.wait_for(asyncio.gather(*waiters), 10.0)
    assert sorted(done) == list(range(8))
    assert most == 1  # never two inside at once
    assert free(path)


async def test_a_cancelled_wait_leaves_the_lock_free(held: tuple[Path, int]) -> None:
    path, fd = held
    entered = False

    async def waiter() -> None:
        nonlocal entered
        async with volume_lock(path, poll=POLL):
            entered = True

    task = asyncio.create_task(waiter())
    await asyncio.sleep(POLL * 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fcntl.flock(fd, fcntl.LOCK_UN)
    assert not entered
    assert free(path)  # the cancelled waiter does not take it after all, nor keep its file open with it


async def test_the_lock_is_held_inside_and_free_after(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "vol.qcow2"
    async with volume_lock(path, poll=POLL):
        assert not free(path)
    assert free(path)
