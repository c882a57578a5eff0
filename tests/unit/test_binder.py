"""The binder against a small fake bucket: decisions assume capacity before their writes land, so
concurrent writes never overcommit; a conflict or a failed write forgets the assumption."""

from __future__ import annotations

import asyncio
from collections import Counter

from proto.errors import ApiError, Code
from proto.events import Event
from proto.overhead import footprint
from proto.spec import VMSpec
from proto.state import VMI, Node, Phase
from scheduler.binder import Binder, Counters
from scheduler.eventsink import EventSink
from scheduler.metrics import SchedulerMetrics
from scheduler.vmicache import VmiCache
from servicekit.store import Change, Entry


class FakeVmis:
    """The vmis bucket: CAS by revision; ``hold`` keeps writes waiting (in flight) until set."""

    def __init__(self) -> None:
        self.data: dict[str, Entry[VMI]] = {}
        self.seq = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.in_flight = 0
        self.fail: dict[str, Exception] = {}

    def put(self, value: VMI) -> Entry[VMI]:
        self.seq += 1
        self.data[value.name] = Entry(value.name, value, self.seq)
        return self.data[value.name]

    async def items(self) -> list[Entry[VMI]]:
        return list(self.data.values())

    async def get(self, key: str) -> Entry[VMI] | None:
        return self.data.get(key)

    async def update(self, key: str, value: VMI, revision: int) -> int:
        self.in_flight += 1
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1
        if key in self.fail:
            raise self.fail.pop(key)
        current = self.data.get(key)
        if current is None or current.revision != revision:
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile")
        return self.put(value).revision


class FakeNodes:
    def __init__(self, *nodes: Node) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.distrusted: dict[str, float] = {}
        self.generation = 0  # a test that changes a node bumps it, as the node watch does

    def readiness(self) -> dict[str, bool]:
        return dict.fromkeys(self.nodes, True)


# what one of these tests' 1Gi VMIs books on its node: guest RAM and the per-VM overhead
BOOKED = footprint(VMSpec(name="x", memory="1Gi"))


def node(name: str, vmis: int) -> Node:
    """A node with room for exactly ``vmis`` of the tests' VMIs."""
    return Node(name=name, cpus=8, memory=vmis * BOOKED, kvm=False, heartbeat=0.0, started_at=0.0)


def vmi(name: str) -> VMI:
    return VMI(name=name, uid=name, spec=VMSpec(name=name, memory="1Gi"), created_at=0.0)


async def binder_over(bucket: FakeVmis, nodes: FakeNodes, events: list[Event]) -> tuple[Binder, VmiCache]:
    async def emit(event: Event) -> None:
        events.append(event)

    cache = VmiCache(bucket)
    await cache.prime()
    return Binder(bucket, cache, nodes, store=None, clock=lambda: 1.0, counters=Counters(),
                  metrics=SchedulerMetrics(), events=EventSink(emit), in_flight=4), cache


async def until(check: object, what: str) -> None:
    for _ in range(500):
        if callable(check) and check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_a_burst_with_its_writes_in_flight_never_overcommits() -> None:
    bucket, events = FakeVmis(), list[Event]()
    for i in range(10):
        bucket.put(vmi(f"v{i}"))
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 3), node("b", 3)), events)
    bucket.hold.clear()  # nothing is acknowledged yet
    running = asyncio.create_task(binder.run())
    try:
        for i in range(10):
            binder.kick(f"v{i}")
        await until(lambda: bucket.in_flight == 4, "4 writes in flight")  # in_flight=4: the rest wait
        # the whole batch is decided, each decision counting the ones before it, though no write
        # has landed: 3 on each node, and the 4 left over found no room
        assert (binder.index.allocation("a")[2], binder.index.allocation("b")[2]) == (3, 3)
        assert binder.index.assumed("v0") in ("a", "b")
        bucket.hold.set()
        await until(lambda: all(e.value.node_name or e.value.phase is Phase.SCHEDULING
                                for e in bucket.data.values()), "all decided")
        await binder.events.flushed()
    finally:
        running.cancel()
        await binder.close()
        await binder.events.close()
    per_node = Counter(e.value.node_name for e in bucket.data.values() if e.value.node_name)
    assert per_node == {"a": 3, "b": 3}
    assert binder.index.allocation("a") == (3 * BOOKED, 3, 3)
    assert binder.index.assumed("v0") is None  # the writes confirmed every assumption
    left = [e.value for e in bucket.data.values() if e.value.node_name is None]
    assert len(left) == 4 and all(c.message == "0/2 nodes are available: 2 Insufficient memory."
                                  for v in left for c in v.conditions)
    assert Counter(e.reason for e in events) == {"Scheduled": 6, "FailedScheduling": 4}
    assert cache.entries["v0"].value.node_name in ("a", "b")


async def test_a_conflict_forgets_the_assumption_and_decides_again_on_what_it_is_now() -> None:
    bucket, events = FakeVmis(), list[Event]()
    bucket.put(vmi("v"))
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 1)), events)
    bucket.put(vmi("v"))  # someone changed it since the cache read it
    assert await binder.schedule("v") is False
    assert binder.index.allocation("a") == (0, 0, 0) and binder.counters.conflicts == 1
    assert cache.entries["v"].revision == bucket.data["v"].revision  # read again
    assert await binder.schedule("v") is True
    assert bucket.data["v"].value.node_name == "a" and binder.index.allocation("a")[2] == 1
    assert [e.reason for e in events] == ["Scheduled"]
    await binder.events.close()


async def test_a_failed_write_forgets_the_assumption() -> None:
    bucket, events = FakeVmis(), list[Event]()
    bucket.put(vmi("v"))
    binder, _ = await binder_over(bucket, FakeNodes(node("a", 1)), events)
    bucket.fail["v"] = ConnectionError("no answer")
    assert await binder.schedule("v") is False
    assert binder.index.allocation("a") == (0, 0, 0) and bucket.data["v"].value.node_name is None
    await asyncio.sleep(1.2)  # tried again a moment later (RETRY_S), queued for the loop
    assert "v" in binder._pending
    await binder.events.close()


async def test_the_watch_seeing_another_schedulers_bind_counts_it() -> None:
    bucket, events = FakeVmis(), list[Event]()
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 1), node("b", 1)), events)
    other = bucket.put(VMI(name="x", uid="x", spec=VMSpec(name="x", memory="1Gi"), created_at=0.0,
                           node_name="a", phase=Phase.SCHEDULED))
    cache.apply(Change("x", other.value, other.revision))
    bucket.put(vmi("v"))
    cache.apply(Change("v", bucket.data["v"].value, bucket.data["v"].revision))
    assert await binder.schedule("v") is True
    assert bucket.data["v"].value.node_name == "b"
    await binder.events.close()


async def test_instances_bound_as_they_are_created_count_before_their_creates_land() -> None:
    """bind_new: the VM controller's creates carry their node; decided one after another with the
    creates not yet acknowledged, they fill each node exactly, and a create that fails gives its room back."""
    bucket, events = FakeVmis(), list[Event]()
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 2), node("b", 1)), events)
    bound = [binder.bind_new(vmi(f"v{i}")) for i in range(4)]
    assert [b.node_name if b else None for b in bound[:3]].count("a") == 2
    assert bound[3] is None  # no room left: created unbound, the binder says why (FailedScheduling) as ever
    assert all(b.phase is Phase.SCHEDULED and b.conditions[-1].reason == "Scheduled" for b in bound[:3] if b)
    first, second, third = (b for b in bound[:3] if b is not None)
    binder.not_created(second.name)  # its create failed: the room it took is free again
    assert sum(binder.index.allocation(n)[2] for n in ("a", "b")) == 2
    event = binder.created(first, bucket.put(first).revision)
    assert (event.reason, event.node) == ("Scheduled", first.node_name)
    assert binder.index.assumed(first.name) is None and cache.entries[first.name].value.node_name == first.node_name
    assert binder.counters.binds == 1
    assert binder.bind_new(vmi(first.name)) is None  # a name the cache holds is not new: the binder's own
    await binder.events.close()


async def test_a_create_that_lost_to_another_leaves_the_binders_own_assumption() -> None:
    """The VM controller's create (bind_new) loses to someone else's create of the same instance,
    unbound, which the binder decides while the controller's create is still out: when the
    controller learns its create failed, the room the binder's decision took stays taken. Forgetting
    it bound a node past its capacity (tests/integration/test_bind_burst.py: 151 and 160 of 150)."""
    bucket, events = FakeVmis(), list[Event]()
    binder, cache = await binder_over(bucket, FakeNodes(node("a", 1), node("b", 1)), events)
    ours = binder.bind_new(vmi("v"))  # the controller's create, in flight
    assert ours is not None
    theirs = bucket.put(vmi("v"))  # someone else's create landed first, unbound
    cache.apply(Change("v", theirs.value, theirs.revision))
    bucket.hold.clear()
    deciding = asyncio.create_task(binder.schedule("v"))  # the binder's decision, its write in flight
    await until(lambda: bucket.in_flight == 1, "the binder's write in flight")
    chosen = binder.index.assumed("v")
    assert chosen is not None
    binder.not_created("v")  # the controller's create: ALREADY_EXISTS
    assert binder.index.assumed("v") == chosen  # the binder's assumption stands
    assert sum(binder.index.allocation(n)[2] for n in ("a", "b")) == 1
    assert binder.bind_new(vmi("w")) is not None  # one node left, not two
    assert binder.bind_new(vmi("x")) is None
    bucket.hold.set()
    assert await deciding is True
    assert sum(binder.index.allocation(n)[2] for n in ("a", "b")) == 2
    await binder.events.close()
