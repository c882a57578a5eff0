"""The leader's copies of each node's VMIs (scheduler.nodevmis): what one change does to them."""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec

from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VMI, MigrationPhase, MigrationState, Phase
from scheduler.nodevmis import Copied, CopyPlan, NodeVmiMirror, plan, strays
from servicekit.store import Change, Store


def vmi(node: str | None) -> VMI:
    return VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, node_name=node)


def test_a_bound_vmi_is_copied_to_its_node_and_moves_with_it() -> None:
    assert plan(None, vmi(None), 1) == CopyPlan()  # not bound: no node hears of it
    assert plan(None, vmi("node1"), 2) == CopyPlan(put=("node1.vm1",))
    assert plan(Copied(("node1.vm1",), 2), vmi("node1"), 3) == CopyPlan(put=("node1.vm1",))
    assert plan(Copied(("node1.vm1",), 3), vmi("node2"), 4) == CopyPlan(put=("node2.vm1",), delete=("node1.vm1",))
    assert plan(Copied(("node2.vm1",), 4), vmi(None), 5) == CopyPlan(delete=("node2.vm1",))  # a new run, unbound
    assert plan(Copied(("node2.vm1",), 5), None, 6) == CopyPlan(delete=("node2.vm1",))


def migrating(node: str, target: str | None, phase: MigrationPhase = MigrationPhase.SCHEDULED) -> VMI:
    state = MigrationState(migration_uid="m1", migration_name="mig", source_node=node, phase=phase,
                           start_timestamp=1.0, target_node=target)
    return msgspec.structs.replace(vmi(node), phase=Phase.RUNNING, migration_state=state)


def test_a_migrating_vmi_is_copied_to_its_target_too_until_the_migration_ends() -> None:
    assert plan(Copied(("node1.vm1",), 2), migrating("node1", None, MigrationPhase.SCHEDULING), 3) \
        == CopyPlan(put=("node1.vm1",))  # no target yet
    assert plan(Copied(("node1.vm1",), 3), migrating("node1", "node2"), 4) == CopyPlan(put=("node1.vm1", "node2.vm1"))
    # it failed: the target hears that, and its copy goes
    failed = migrating("node1", "node2", MigrationPhase.FAILED)
    assert plan(Copied(("node1.vm1", "node2.vm1"), 4), failed, 5) == CopyPlan(put=("node1.vm1",),
                                                                             delete=("node2.vm1",))
    # it succeeded: bound to the target now, the source's copy goes
    moved = msgspec.structs.replace(migrating("node1", "node2", MigrationPhase.SUCCEEDED), node_name="node2")
    assert plan(Copied(("node1.vm1", "node2.vm1"), 4), moved, 5) == CopyPlan(put=("node2.vm1",),
                                                                            delete=("node1.vm1",))
    # an instance that ended mid-migration is its node's only
    ended = msgspec.structs.replace(migrating("node1", "node2", MigrationPhase.RUNNING), phase=Phase.FAILED)
    assert plan(Copied(("node1.vm1", "node2.vm1"), 4), ended, 5).delete == ("node2.vm1",)


def test_an_older_update_changes_nothing() -> None:
    assert plan(Copied(("node1.vm1",), 7), vmi("node2"), 7) == CopyPlan()
    assert plan(Copied(("node1.vm1",), 7), None, 5) == CopyPlan()


def test_a_rebuild_removes_copies_nothing_wants() -> None:
    assert strays({"node1.vm1": 3, "node1.gone": 2, "node2.vm2": 4}, {"node1.vm1", "node2.vm2"}) == ["node1.gone"]


class FakeCopies:
    """The node shards as the mirror writes them: every copy by key; a put can be held mid-flight."""

    def __init__(self) -> None:
        self.copies: dict[str, int] = {}  # key -> the vmis revision copied
        self.writes = 0
        self.held: asyncio.Event | None = None

    def node_vmis(self, node: str) -> FakeCopies:
        return self

    async def put(self, key: str, value: NodeVmi) -> int:
        self.writes += 1
        if self.held is not None:
            await self.held.wait()
        self.copies[key] = value.revision
        return self.writes

    async def delete(self, key: str, revision: int | None = None) -> None:
        self.writes += 1
        self.copies.pop(key, None)


async def settled(mirror: NodeVmiMirror) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    assert not mirror.queue.busy("vm1")


async def test_an_unbound_vmi_never_copied_costs_no_worker_and_no_write() -> None:
    shards = FakeCopies()
    mirror = NodeVmiMirror(cast(Store, shards), fed=True)
    mirror.apply(Change("vm1", vmi(None), 1))  # a create, as a burst brings ten thousand of them
    assert not mirror.queue.busy("vm1")
    await settled(mirror)
    assert shards.writes == 0
    mirror.apply(Change("vm1", vmi("node1"), 2))  # bound: copied to its node
    await settled(mirror)
    assert shards.copies == {"node1.vm1": 2}
    mirror.apply(Change("vm1", vmi(None), 3))  # unbound again (a new run): its copy goes
    await settled(mirror)
    assert shards.copies == {}
    await mirror.queue.close()


async def test_unbound_while_its_copy_is_being_written_the_copy_still_goes() -> None:
    shards = FakeCopies()
    mirror = NodeVmiMirror(cast(Store, shards), fed=True)
    shards.held = asyncio.Event()
    mirror.apply(Change("vm1", vmi("node1"), 2))
    for _ in range(5):
        await asyncio.sleep(0)  # its worker is in the put now, the copy not yet noted
    assert mirror.queue.busy("vm1") and "vm1" not in mirror.copied
    mirror.apply(Change("vm1", vmi(None), 3))  # must not be skipped: the put in flight lands first
    shards.held.set()
    await settled(mirror)
    assert shards.copies == {}
    await mirror.queue.close()
