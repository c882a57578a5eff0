"""Pure: what the migration controller (scheduler.migrations) does next for one
VirtualMachineInstanceMigration, from the record and its instance as the leader's caches hold them.

The instance's ``migration_state`` is the truth of a migration under way: the controller starts it
there, the binder chooses its target, the nodes move it on (proto.migrations.apply_report). The
migration's own record follows (``Mirror``), and says why when it could not start.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from proto.clusterconfig import MigrationsConfig
from proto.migrationpolicies import MigrationPolicy, overlay
from proto.migrations import FINAL, TARGET_READY_TIMEOUT_S, Migration, not_migratable
from proto.state import FINAL_PHASES, VMI, MigrationPhase, MigrationState

KEEP_FINISHED = 5  # finished migrations kept per instance, as KubeVirt's garbage collection keeps them


class Step(enum.Enum):
    NOTHING = "nothing"
    START = "start"  # write the instance's migration_state: Scheduling
    PLACE = "place"  # the binder chooses a target node (Scheduled), or says none fits (Failed)
    FAIL = "fail"  # the migration under way fails (the target took too long, or it was cancelled early)
    ABORT = "abort"  # ask the source to abort the migration it runs
    MIRROR = "mirror"  # the migration's record takes its instance's phase


@dataclass(frozen=True)
class Act:
    step: Step
    phase: MigrationPhase | None = None  # MIRROR: the record's phase
    reason: str = ""


def plan(item: Migration, vmi: VMI | None, now: float, wait: str | None = None) -> Act:
    """wait: why a migration may not start now (``must_wait``): it stays Pending, saying so."""
    if item.phase in FINAL:
        return Act(Step.NOTHING)
    state = vmi.migration_state if vmi is not None else None
    mine = state is not None and state.migration_uid == item.uid
    if vmi is None:
        return Act(Step.MIRROR, MigrationPhase.FAILED, f"VMI {item.vmi_name} does not exist")
    if not mine or state is None:
        if item.phase is MigrationPhase.PENDING:
            why = not_migratable(vmi)
            if why:
                return Act(Step.MIRROR, MigrationPhase.FAILED, why)
            if wait is not None:
                return Act(Step.NOTHING) if item.reason == wait else Act(Step.MIRROR, MigrationPhase.PENDING, wait)
            return Act(Step.START)
        return Act(Step.MIRROR, MigrationPhase.FAILED, f"VMI {vmi.name} is no longer the instance it was migrating")
    if vmi.phase in FINAL_PHASES and not state.final:
        return Act(Step.MIRROR, MigrationPhase.FAILED, f"VMI {vmi.name} ended ({vmi.phase.value}) during the migration")
    if state.phase is MigrationPhase.SCHEDULING:
        return Act(Step.PLACE)
    if state.phase is MigrationPhase.SCHEDULED and now - state.start_timestamp > TARGET_READY_TIMEOUT_S:
        return Act(Step.FAIL, reason=f"the target on node {state.target_node} was not ready within "
                                     f"{TARGET_READY_TIMEOUT_S:.0f}s")
    if (item.phase, item.reason, item.source_node, item.target_node) != (
            state.phase, state.reason, state.source_node, state.target_node):
        return Act(Step.MIRROR, state.phase, state.reason)
    return Act(Step.NOTHING)


def must_wait(under_way: list[MigrationState], source_node: str | None, config: MigrationsConfig) -> str | None:
    """Why one more migration, off ``source_node``, may not start now (KubeVirt's limits: so many in
    the cluster, so many out of one node), None when it may."""
    if len(under_way) >= config.parallel_migrations_per_cluster:
        return (f"waiting: {len(under_way)} migrations are under way in the cluster "
                f"(parallelMigrationsPerCluster {config.parallel_migrations_per_cluster})")
    outbound = sum(1 for s in under_way if s.source_node == source_node)
    if outbound >= config.parallel_outbound_migrations_per_node:
        return (f"waiting: {outbound} migrations are under way out of node {source_node} "
                f"(parallelOutboundMigrationsPerNode {config.parallel_outbound_migrations_per_node})")
    return None


def older_first(item: Migration, startable: Sequence[tuple[Migration, str | None]], under_way: list[MigrationState],
                config: MigrationsConfig) -> Migration | None:
    """The oldest migration created before ``item`` (by creation, then name) that the limits let start
    now, which starts first; None when there is none. Pending migrations start oldest first: when one
    ends, every one held is looked at again, and the first looked at would otherwise take its room.
    startable: the other Pending migrations that would start but for the limits, each with the node
    it would leave (an older one held by its own node's limit holds nothing else back)."""
    first = (item.created_at, item.name)
    for other, source in sorted(startable, key=lambda s: (s[0].created_at, s[0].name)):
        if (other.created_at, other.name) >= first:
            return None
        if must_wait(under_way, source, config) is None:
            return other
    return None


def older_first_reason(other: Migration) -> str:
    return f"waiting: migration {other.name}, created before it, starts first"


def cancelled(vmi: VMI | None, name: str) -> Act:
    """The migration's record was deleted (virtbus migrate-cancel): one that has not begun to move the
    guest fails at once; one that moves it is aborted by its source."""
    state = vmi.migration_state if vmi is not None else None
    if vmi is None or state is None or state.migration_name != name or state.final or vmi.phase in FINAL_PHASES:
        return Act(Step.NOTHING)
    if state.phase is MigrationPhase.RUNNING:
        return Act(Step.NOTHING if state.abort_requested else Step.ABORT)
    return Act(Step.FAIL, reason="the migration was cancelled")


def started(vmi: VMI, item: Migration, now: float, config: MigrationsConfig,
            policy: MigrationPolicy | None = None) -> MigrationState:
    """Its state as it starts, with the cluster's settings as they are now and the instance's
    MigrationPolicy's over them (a change later does not touch a migration under way, as in KubeVirt)."""
    assert vmi.node_name is not None  # not_migratable said so
    return MigrationState(migration_uid=item.uid, migration_name=item.name, source_node=vmi.node_name,
                          phase=MigrationPhase.SCHEDULING, start_timestamp=now,
                          options=overlay(config.options, policy), policy=policy.name if policy else "")


def finished_to_drop(items: list[Migration], vmi: str) -> list[str]:
    """The finished migrations of one instance beyond the newest KEEP_FINISHED, oldest first."""
    done = sorted((m for m in items if m.vmi_name == vmi and m.phase in FINAL), key=lambda m: m.created_at)
    return [m.name for m in done[:-KEEP_FINISHED]] if len(done) > KEEP_FINISHED else []
