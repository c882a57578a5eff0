"""A node's heartbeat (handler.heartbeat): its record is written only when it really changes."""

from __future__ import annotations

from handler.heartbeat import disk_moved, updated
from proto.state import Node

GiB = 2**30


def node(free: int | None) -> Node:
    return Node(name="node1", cpus=2, memory=GiB, kvm=False, heartbeat=1.0, started_at=0.0, free_disk=free)


def test_free_disk_is_written_only_when_it_moves_materially() -> None:
    assert updated(node(100 * GiB), 100 * GiB - 2**20) is None  # a log line's worth: no write every node hears
    assert updated(node(100 * GiB), 99 * GiB) is None  # 1 %
    moved = updated(node(100 * GiB), 90 * GiB)
    assert moved is not None and moved.free_disk == 90 * GiB and moved.heartbeat == 1.0
    assert disk_moved(None, 5 * GiB) and disk_moved(5 * GiB, None) and not disk_moved(None, None)
    assert disk_moved(GiB, GiB // 2)  # small disks: the absolute step
