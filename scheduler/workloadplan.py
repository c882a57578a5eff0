"""Pure planners of the workload kinds (proto.workloads): from a set's desired count and its members
as they are, which members to make and which to let go.

A replica set counts its instances that may still run: one that ended (Failed or Succeeded), was
fenced off, or whose node is lost (Unknown: scheduler.nodelife) no longer counts, is let go (the VM
controller stops and removes it once it can) and is replaced at once under another name. Scaling
down lets go first of what is not running yet, then the newest, as KubeVirt does.

A pool counts its VMs: each is a VM of its own whose run strategy restarts it, so only a missing VM
is made again, under the lowest free index; scaling down removes the highest index first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from proto.state import FINAL_PHASES, VMI, Phase
from proto.workloads import WorkloadStatus


@dataclass(frozen=True)
class ReplicaPlan:
    create: int = 0
    let_go: list[str] = field(default_factory=list)  # to mark deleting: ended, lost, or one too many
    status: WorkloadStatus = WorkloadStatus(replicas=0, ready_replicas=0)


def counts(vmi: VMI) -> bool:
    """Whether an instance of a set still counts toward its replicas."""
    return not (vmi.deleting or vmi.fenced or vmi.phase in FINAL_PHASES or vmi.phase is Phase.UNKNOWN)


def plan_replicas(replicas: int, members: Iterable[VMI]) -> ReplicaPlan:
    mine = [v for v in members if not v.deleting]
    gone = sorted(v.name for v in mine if not counts(v))
    alive = [v for v in mine if counts(v)]
    # not running first, then the newest: what costs least to lose
    alive.sort(key=lambda v: (v.phase is Phase.RUNNING, -v.created_at, v.name))
    excess = max(len(alive) - replicas, 0)
    let_go = [v.name for v in alive[:excess]]
    kept = alive[excess:]
    status = WorkloadStatus(replicas=len(kept), ready_replicas=sum(v.phase is Phase.RUNNING for v in kept))
    return ReplicaPlan(create=max(replicas - len(alive), 0), let_go=gone + let_go, status=status)


@dataclass(frozen=True)
class PoolPlan:
    create: list[int] = field(default_factory=list)  # the indices of VMs to make
    delete: list[str] = field(default_factory=list)  # VMs to delete, highest index first


def plan_pool(replicas: int, members: Mapping[str, int | None]) -> PoolPlan:
    """members: each VM the pool owns and its index (None: a name the pool would not have made)."""
    strays = sorted(name for name, index in members.items() if index is None)
    indexed = sorted(((index, name) for name, index in members.items() if index is not None), reverse=True)
    excess = max(len(indexed) - replicas, 0)
    delete = strays + [name for _, name in indexed[:excess]]
    taken = {index for index, _ in indexed}
    missing = max(replicas - len(indexed), 0)
    create: list[int] = []
    index = 0
    while len(create) < missing:
        if index not in taken:
            create.append(index)
        index += 1
    return PoolPlan(create=create, delete=delete)


def pool_status(vmis: Iterable[VMI | None], replicas: int) -> WorkloadStatus:
    """A pool's status: its VMs, and how many of their instances are Running."""
    return WorkloadStatus(replicas=replicas, ready_replicas=sum(v is not None and v.phase is Phase.RUNNING
                                                               for v in vmis))
