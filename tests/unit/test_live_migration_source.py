"""The source launcher's side of a migration (launcher.livemigration.Source) with a stateful fake of
the node API: a migration that ends badly (no token, and its end no longer heard by the control plane
because a newer one began) does not hold up the next one, which starts as soon as the first is done."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from launcher import livemigration, migrationtoken
from proto.errors import ApiError, Code
from proto.migrations import MigrationReport, MigrationReportReply
from proto.migrationtoken import TokenGrant
from proto.spec import VMSpec
from proto.state import VMI, MigrationOptions, MigrationPhase, MigrationState, MigrationTarget, Phase


class FakeNodeApi:
    """The control plane as the source sees it: the migration the instance has now, and what was said."""

    def __init__(self) -> None:
        self.current = "m1"
        self.said: list[tuple[str, MigrationPhase]] = []
        self.hold_m1_failure = asyncio.Event()  # m1's failure report waits on this

    async def migration(self, report: MigrationReport, patience: float = 60.0) -> MigrationReportReply:
        self.said.append((report.migration_uid, report.phase))
        if report.migration_uid == "m1":
            await self.hold_m1_failure.wait()
        if report.migration_uid != self.current:
            raise ApiError(Code.NOT_FOUND, f"VMI vm1 has no migration {report.migration_uid} under way")
        # m2 is told it failed as it starts: enough to see it was started, no guest to move here
        return MigrationReportReply(phase=MigrationPhase.FAILED)


def ready(uid: str) -> VMI:
    state = MigrationState(migration_uid=uid, migration_name=f"mig-{uid}", source_node="node1",
                           phase=MigrationPhase.TARGET_READY, start_timestamp=1.0, target_node="node2",
                           target=MigrationTarget(address="10.99.0.12", port=40000, node_dir="/var/lib/n2"),
                           options=MigrationOptions(disable_tls=True))  # in the clear: no certificate to make
    return VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, phase=Phase.RUNNING,
               node_name="node1", migration_state=state)


async def test_a_migration_made_ready_while_the_last_one_ended_badly_starts_once_it_is_done(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    async def ask(nc: Any, *, target_node: str, vmi: str, migration_uid: str, tls: bool = True,
                  asks: int = 6) -> TokenGrant:
        asked.append(migration_uid)
        assert not tls
        if migration_uid == "m1":  # the target went away before the source could ask
            raise ApiError(Code.UNAVAILABLE, "the target's launcher on node node2 did not give its token")
        return TokenGrant(token="ab" * 16)

    monkeypatch.setattr(migrationtoken, "ask", ask)
    api = FakeNodeApi()
    source = livemigration.Source(None, api, vmi="vm1", uid="u1", node="node1",  # type: ignore[arg-type]
                                  node_dir=Path("/var/lib/n1"), domain=lambda: object(), memory=64 << 20,
                                  node_netns=None)
    source.heard(ready("m1"))
    first = source.task
    assert first is not None
    await asyncio.sleep(0.01)
    assert api.said == [("m1", MigrationPhase.FAILED)]  # no token: it says so, and the word is held up
    api.current = "m2"
    source.heard(ready("m2"))  # the next migration is ready while the first has not ended
    assert source.task is first
    api.hold_m1_failure.set()
    await asyncio.wait_for(asyncio.shield(first), 5)
    for _ in range(100):
        if ("m2", MigrationPhase.RUNNING) in api.said:
            break
        await asyncio.sleep(0.01)
    assert asked == ["m1", "m2"] and ("m2", MigrationPhase.RUNNING) in api.said
    if source.task is not None:
        await asyncio.wait_for(source.task, 5)
    assert not source.moved.is_set()
