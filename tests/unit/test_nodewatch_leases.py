"""Node readiness from leases (scheduler.nodewatch): a renewal is a beat; a record rewritten with the
same heartbeat (free disk moved) is not; a handler from before leases still beats by its record."""

from __future__ import annotations

import msgspec

from proto.state import Node, NodeLease
from scheduler.nodelife import Thresholds
from scheduler.nodewatch import NodeWatch
from servicekit.store import Change, Store


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


NODE = Node(name="node1", cpus=2, memory=2**30, kvm=False, heartbeat=5.0, started_at=0.0)


def test_a_lease_renewal_keeps_the_node_ready_and_a_record_write_does_not(offline_store: Store) -> None:
    clock = Clock()
    watch = NodeWatch(offline_store, thresholds=Thresholds(ready_within=10.0, lost_after=20.0), clock=clock)
    watch.apply(Change("node1", NODE, 1))
    watch.apply_node_lease(Change("node1", NodeLease(renewed_at=6.0), 1))
    clock.now = 108.0
    watch.apply_node_lease(Change("node1", NodeLease(renewed_at=14.0), 2))
    clock.now = 117.0
    assert watch.readiness() == {"node1": True}  # 9 s since the renewal
    watch.apply(Change("node1", msgspec.structs.replace(NODE, free_disk=2**30), 2))  # not a beat
    clock.now = 119.0
    assert watch.readiness() == {"node1": False}
    watch.apply(Change("node1", msgspec.structs.replace(NODE, heartbeat=20.0), 3))  # an old handler's beat
    assert watch.readiness() == {"node1": True}


def test_a_lease_of_no_node_is_no_node(offline_store: Store) -> None:
    watch = NodeWatch(offline_store, clock=Clock())
    watch.apply_node_lease(Change("ghost", NodeLease(renewed_at=1.0), 1))
    assert watch.readiness() == {} and watch.nodes == {}
