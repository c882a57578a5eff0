"""The launcher's side of HA fencing (launcher.leasekeeper) against a stateful fake of the lease
bucket that can be cut off the bus, on a shortened timing contract: it renews while the bus answers,
kills the guest once no renewal was acknowledged for FENCE_AFTER_S (never before), never renews a
lapsed lease (a launcher frozen past its deadline fences before it sends), and fences at once when
the control plane has taken the lease away."""

from __future__ import annotations

import asyncio
import time

import pytest

from launcher.leasekeeper import LeaseKeeper, LeaseNotTaken
from proto import fencing
from proto.errors import ApiError, Code
from proto.state import VmiLease

RENEW, FENCE, EXPIRE = 0.05, 0.3, 0.5


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fencing, "RENEW_EVERY_S", RENEW)
    monkeypatch.setattr(fencing, "FENCE_AFTER_S", FENCE)
    monkeypatch.setattr(fencing, "EXPIRE_AFTER_S", EXPIRE)


class FakeLeases:
    """A KV bucket as the launcher sees it: revisions, compare-and-set, and a bus that can be cut
    (every call then hangs, as a publish does while nats-py waits to reconnect)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[VmiLease, int]] = {}
        self.seq = 0
        self.bus = asyncio.Event()
        self.bus.set()
        self.writes: list[tuple[float, VmiLease]] = []

    async def _reach(self) -> None:
        await self.bus.wait()

    async def put(self, key: str, value: VmiLease) -> int:
        await self._reach()
        self.seq += 1
        self.entries[key] = (value, self.seq)
        self.writes.append((time.monotonic(), value))
        return self.seq

    async def update(self, key: str, value: VmiLease, revision: int) -> int:
        await self._reach()
        if key not in self.entries or self.entries[key][1] != revision:
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile")
        return await self.put(key, value)

    async def delete(self, key: str, revision: int | None = None) -> None:
        await self._reach()
        if revision is not None and (key not in self.entries or self.entries[key][1] != revision):
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile")
        self.entries.pop(key, None)


def keeper(bucket: FakeLeases, kills: list[str]) -> LeaseKeeper:
    return LeaseKeeper(bucket, node="node1", vmi="vm1", uid="u1", fence=kills.append)


async def test_renews_while_the_bus_answers_and_releases_at_the_end() -> None:
    bucket, kills = FakeLeases(), list[str]()
    k = keeper(bucket, kills)
    await k.take()
    task = asyncio.create_task(k.run())
    await asyncio.sleep(FENCE * 3)
    assert not kills and not task.done()
    renewals = bucket.entries["node1.vm1"][0].renewals
    assert renewals >= (FENCE * 3) / RENEW * 0.5, renewals
    task.cancel()
    await k.release()
    assert "node1.vm1" not in bucket.entries


async def test_a_cut_bus_fences_after_the_deadline_and_not_before() -> None:
    bucket, kills = FakeLeases(), list[str]()
    k = keeper(bucket, kills)
    await k.take()
    task = asyncio.create_task(k.run())
    await asyncio.sleep(RENEW * 3)
    bucket.bus.clear()  # cut
    last_acked = bucket.writes[-1][0]
    reason = await asyncio.wait_for(task, FENCE * 4)
    fenced_at = time.monotonic()
    assert kills == [reason] and "not renewed" in reason
    # never before the deadline, and well before the control plane would count it lapsed
    assert FENCE <= fenced_at - last_acked + RENEW < EXPIRE, fenced_at - last_acked
    bucket.bus.set()  # back: nothing more is sent, not even the release
    writes = len(bucket.writes)
    await k.release()
    await asyncio.sleep(RENEW * 3)
    assert len(bucket.writes) == writes and "node1.vm1" in bucket.entries


async def test_frozen_past_its_deadline_it_fences_before_sending() -> None:
    bucket, kills = FakeLeases(), list[str]()
    now = [100.0]
    k = LeaseKeeper(bucket, node="node1", vmi="vm1", uid="u1", fence=kills.append, clock=lambda: now[0])
    await k.take()
    sleeps = 0

    async def frozen(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        now[0] += seconds if sleeps < 3 else 60.0  # SIGSTOP for a minute after two renewals
        await asyncio.sleep(0)

    k.sleep = frozen
    reason = await asyncio.wait_for(k.run(), 2.0)
    assert kills == [reason]
    assert bucket.entries["node1.vm1"][0].renewals == 3, "a renewal went out after the deadline"


async def test_a_lease_taken_away_fences_at_once() -> None:
    bucket, kills = FakeLeases(), list[str]()
    k = keeper(bucket, kills)
    await k.take()
    task = asyncio.create_task(k.run())
    await asyncio.sleep(RENEW * 2)
    await bucket.delete("node1.vm1")  # the control plane failed the instance over
    reason = await asyncio.wait_for(task, RENEW * 4)
    assert kills == [reason] and "took the lease away" in reason


async def test_no_lease_no_guest() -> None:
    bucket, kills = FakeLeases(), list[str]()
    bucket.bus.clear()
    with pytest.raises(LeaseNotTaken):
        await keeper(bucket, kills).take()
    assert not kills


async def test_a_keeper_that_breaks_fences() -> None:
    bucket, kills = FakeLeases(), list[str]()
    k = keeper(bucket, kills)
    await k.take()

    def broken() -> float:
        raise RuntimeError("clock gone")

    k.clock = broken
    reason = await asyncio.wait_for(k.run(), 1.0)
    assert kills == [reason] and "failed" in reason
