"""The election's shell (scheduler.leader.Elector) over a stateful fake of a KV bucket that fails
as the real one does (CAS conflicts, a bus that does not answer), on a clock the test turns."""

from __future__ import annotations

import asyncio

from proto.errors import ApiError, Code
from proto.state import Lease
from scheduler.leader import Elector
from scheduler.lease import Timing
from servicekit.store import Bucket, Entry

T = Timing(duration=3.0, renew_every=1.0, renew_deadline=2.0)


class FakeLeases:
    """One key's revisions, as a KV bucket keeps them; ``down`` makes every call time out."""

    def __init__(self) -> None:
        self.value: Lease | None = None
        self.revision = 0
        self.down = False
        self.reads = 0

    def _check(self) -> None:
        if self.down:
            raise TimeoutError("nats: timeout")

    async def get(self, key: str) -> Entry[Lease] | None:
        self._check()
        self.reads += 1
        return None if self.value is None else Entry(key, self.value, self.revision)

    async def create(self, key: str, value: Lease) -> int:
        self._check()
        if self.value is not None:
            raise ApiError(Code.ALREADY_EXISTS, f"{key!r} already exists")
        return self._write(value)

    async def update(self, key: str, value: Lease, revision: int) -> int:
        self._check()
        if revision != self.revision or self.value is None:
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile")
        return self._write(value)

    async def delete(self, key: str, revision: int | None = None) -> None:
        self._check()
        if revision is not None and revision != self.revision:
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile")
        self.value = None
        self.revision += 1

    def _write(self, value: Lease) -> int:
        self.value = value
        self.revision += 1
        return self.revision


class Candidate:
    def __init__(self, name: str, leases: FakeLeases, clock: list[float], start_takes: float = 0.0) -> None:
        self.terms: list[str] = []

        async def lead() -> None:
            await asyncio.sleep(start_takes)
            self.terms.append("lead")

        async def lose() -> None:
            self.terms.append("lose")

        bucket: Bucket[Lease] = leases  # type: ignore[assignment]  # the fake has the methods used
        self.elector = Elector(bucket, "controllers", name, on_lead=lead, on_lose=lose, timing=T,
                               clock=lambda: clock[0], wall=lambda: 0.0)

    async def tick(self) -> None:
        await self.elector.tick()
        for _ in range(3):  # let a starting term run
            await asyncio.sleep(0)


async def test_one_leads_and_the_other_takes_over_only_after_the_lease_stood_still() -> None:
    leases, clock = FakeLeases(), [0.0]
    a, b = Candidate("a", leases, clock), Candidate("b", leases, clock)
    await a.tick()
    await b.tick()
    assert (a.elector.leading, b.elector.leading) == (True, False)
    for _ in range(6):  # a renews every second; b never may take over
        clock[0] += 0.5
        await a.tick()
        await b.tick()
        assert not b.elector.leading
    # a dies (no more ticks): b takes over once the lease stood still for its duration
    clock[0] += 3.0
    await b.tick()
    assert not b.elector.leading
    clock[0] += 0.1
    await b.tick()
    assert b.elector.leading and leases.value is not None and leases.value.holder == "b"


async def test_a_leader_that_cannot_renew_stops_before_anyone_may_start() -> None:
    leases, clock = FakeLeases(), [0.0]
    a = Candidate("a", leases, clock)
    await a.tick()
    assert a.terms == ["lead"]
    leases.down = True
    clock[0] += 1.9
    await a.tick()
    assert a.elector.leading
    clock[0] += 0.1  # 2 s after its last renewal began; another may start only after 3 s
    await a.tick()
    assert (a.elector.leading, a.terms) == (False, ["lead", "lose"])
    leases.down = False  # the bus is back, its lease untouched: it leads again at once
    await a.tick()
    assert a.elector.leading and a.terms == ["lead", "lose", "lead"]


async def test_a_slow_start_does_not_stop_the_renewals() -> None:
    leases, clock = FakeLeases(), [0.0]
    a = Candidate("a", leases, clock, start_takes=3600.0)
    await a.tick()
    for _ in range(10):
        clock[0] += 1.0
        await a.tick()
    assert a.elector.leading and leases.revision == 11  # created, then renewed every second
    await a.elector.resign()  # a start still under way is cancelled, the lease handed back
    assert a.terms == ["lose"] and leases.value is None


async def test_a_leader_renews_on_its_own_revision_without_reading_and_a_conflict_reads_afresh() -> None:
    """What the bus carries for a leading scheduler: one write a second, not a read at every poll
    (4 a second) besides. Someone else's write since its last is a conflict, then a read."""
    leases, clock = FakeLeases(), [0.0]
    a = Candidate("a", leases, clock)
    await a.tick()
    assert a.elector.leading
    leases.reads = 0
    for _ in range(40):  # 10 s of polls
        clock[0] += 0.25
        await a.tick()
    assert (leases.reads, leases.revision) == (0, 11)  # created, then renewed every second, never read
    # someone writes the lease (an operator's hand, a split brain): the next renewal conflicts...
    assert leases.value is not None
    leases._write(leases.value)
    clock[0] += 1.0
    await a.tick()
    assert leases.reads == 0 and a.elector.view is None
    clock[0] += 0.25  # ...and the step after reads it, sees itself the holder and renews on that
    await a.tick()
    assert leases.reads == 1 and a.elector.leading and leases.revision == 13
