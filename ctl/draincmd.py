"""``virtbus cordon|uncordon NODE`` and ``virtbus drain NODE``: a node's maintenance, as kubectl's.

Drain is kubectl's: the node cordoned first, then every instance on it evicted (``vmi.evict``) and
waited for until the node holds none. An instance whose evictionStrategy is LiveMigrate (or
LiveMigrateIfPossible, and it can move) is migrated off alive instead, as KubeVirt's evacuation does.
What may not go unasked is refused before anything is evicted,
and the node stays cordoned, as kubectl leaves it: instances of nobody's (``--force``: they end and
nothing runs them again), and instances whose disks hold what the guest wrote only for this run
(containerDisk, emptyDisk, ephemeral: ``--delete-emptydir-data``, as for a pod's emptyDir).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, EvictRequest, NameRequest, NodeList, VMIList
from proto.clusterconfig import ClusterConfigReply
from proto.errors import ApiError, Code
from proto.migrations import eviction_way
from proto.spec import (
    ContainerDisk,
    EmptyDisk,
    Ephemeral,
    EvictionStrategy,
    HostDisk,
    PersistentVolumeClaim,
    eviction_strategy,
)
from proto.state import FINAL_PHASES, VMI, MigrationPhase
from proto.validation import MAX_GRACE_SECONDS

UNMANAGED = "cannot evict VMIs not managed by a VM or a replica set (use --force to override)"
LOCAL_DATA = ("cannot evict VMIs with local storage: what their guests wrote to containerDisk, emptyDisk and "
              "ephemeral volumes goes with them (use --delete-emptydir-data to override)")
MIGRATE_ONLY = ("cannot evict VMIs whose evictionStrategy is External, or LiveMigrate while they cannot move alive "
                "(use --disable-eviction to stop them and run them again elsewhere)")
POLL_S = 0.5
RETRY_MIGRATION_S = 5.0  # a failed migration off the node is tried again at most this often
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")


@dataclass(frozen=True)
class DrainPlan:
    evict: list[str]  # in name order
    refused: dict[str, list[str]] = field(default_factory=dict)  # reason -> the instances it holds back
    warnings: list[str] = field(default_factory=list)


def on_node(vmis: list[VMI], node: str) -> list[VMI]:
    """The instances the node runs or is to run (pure)."""
    return sorted((v for v in vmis if v.node_name == node and v.phase not in FINAL_PHASES), key=lambda v: v.name)


def plan(vmis: list[VMI], node: str, *, force: bool, delete_local_data: bool,
         disable_eviction: bool = False, cluster_strategy: EvictionStrategy | None = None) -> DrainPlan:
    """What a drain of ``node`` evicts, what it refuses and why, and what it should tell (pure)."""
    evict: list[str] = []
    refused: dict[str, list[str]] = {}
    warnings: list[str] = []
    for vmi in on_node(vmis, node):
        sources = [v.source for v in vmi.spec.volumes]
        reasons = []
        strategy = eviction_strategy(vmi.spec.eviction_strategy, cluster_strategy)
        way, why = eviction_way(vmi, strategy)
        if disable_eviction:
            way = "evict"
        if vmi.standalone and vmi.owner is None and not force and way != "migrate":
            reasons.append(UNMANAGED)
        # a guest that moves alive takes what it wrote with it
        if any(isinstance(s, ContainerDisk | EmptyDisk | Ephemeral) for s in sources) and not delete_local_data \
                and way != "migrate":
            reasons.append(LOCAL_DATA)
        if way == "refuse":
            reasons.append(MIGRATE_ONLY)
            warnings.append(f"vmi/{vmi.name}: evictionStrategy {strategy}: {why}")
        for reason in reasons:
            refused.setdefault(reason, []).append(vmi.name)
        if reasons:
            continue
        evict.append(vmi.name)
        claimed = [s.claim_name for s in sources if isinstance(s, PersistentVolumeClaim)]
        if claimed and not vmi.standalone:
            # every virtbus volume is one node's file: the VM can run only where they are
            warnings.append(f"vmi/{vmi.name}: its volumes ({', '.join(claimed)}) are on {node}, so it runs again "
                            f"only once {node} is uncordoned")
        if any(isinstance(s, HostDisk) for s in sources):
            warnings.append(f"vmi/{vmi.name}: its hostDisk files stay on {node}")
    return DrainPlan(evict, refused, warnings)


def still_there(vmis: list[VMI], node: str, node_ready: bool) -> list[str]:
    """The instances the drain still waits for: those not yet ended, and, while the node is Ready to
    say so, those it has not torn down yet (pure)."""
    return sorted(v.name for v in vmis if v.node_name == node
                  and (v.phase not in FINAL_PHASES or (node_ready and not v.torn_down)))


def duration(text: str) -> float:
    """kubectl's --timeout: seconds, or a number with s, m or h; 0 waits for ever."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is no duration (90, 90s, 5m, 1h; 0 for no limit)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def grace(value: int) -> int | None:
    """kubectl's --grace-period: -1 (or below) is each guest's own terminationGracePeriodSeconds."""
    if value > MAX_GRACE_SECONDS:
        raise ApiError(Code.BAD_REQUEST, f"--grace-period {value}: at most {MAX_GRACE_SECONDS}", "grace-period")
    return None if value < 0 else value


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for verb, text in (("cordon", "mark a node unschedulable: nothing new goes there, what runs stays"),
                       ("uncordon", "mark a node schedulable again")):
        sub.add_parser(verb, help=text).add_argument("node")
    d = sub.add_parser("drain", help="empty a node for maintenance: cordon it, evict its VMIs (VMs run them again "
                                     "elsewhere) and wait until it holds none (kubectl drain)")
    d.add_argument("node")
    d.add_argument("--force", action="store_true", help="also evict VMIs of no VM or replica set (they just end)")
    d.add_argument("--delete-emptydir-data", "--delete-local-data", dest="delete_local_data", action="store_true",
                   help="also evict VMIs whose containerDisk, emptyDisk or ephemeral writes go with them")
    d.add_argument("--grace-period", type=int, default=-1,
                   help="seconds each guest has to power off (-1: its own terminationGracePeriodSeconds)")
    d.add_argument("--timeout", type=duration, default=0.0, help="give up after this long (90s, 5m; 0: never)")
    d.add_argument("--disable-eviction", action="store_true",
                   help="stop every VMI, also those whose evictionStrategy would move them alive (LiveMigrate, "
                        "LiveMigrateIfPossible) or refuses an eviction (External)")
    d.add_argument("--ignore-daemonsets", action="store_true", help="accepted for kubectl's sake: there are none")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.command in ("cordon", "uncordon"):
        say((await api.call("node", args.command, NameRequest(name=args.node), Ack)).message)
        return 0
    return await drain(api, args)


async def drain(api: ApiClient, args: argparse.Namespace) -> int:
    node, wait_s = args.node, grace(args.grace_period)
    say((await api.call("node", "cordon", NameRequest(name=node), Ack)).message)
    vmis = (await api.call("vmi", "list", {}, VMIList)).items
    cluster = (await api.call("kubevirt", "get", {}, ClusterConfigReply)).item  # its evictionStrategy
    chosen = plan(vmis, node, force=args.force, delete_local_data=args.delete_local_data,
                  disable_eviction=args.disable_eviction, cluster_strategy=cluster.eviction_strategy)
    if chosen.refused:
        detail = "; ".join(f"{reason}: {', '.join(f'vmi/{n}' for n in names)}"
                           for reason, names in chosen.refused.items())
        raise ApiError(Code.INVALID, f"unable to drain node {node!r} (it stays cordoned; nothing was evicted): "
                                     f"{detail}")
    for line in chosen.warnings:
        say(f"warning: {line}")
    moving: set[str] = set()
    began = time.time()
    for name in chosen.evict:
        said = await _evict(api, name, wait_s, args.disable_eviction)
        if "migrating off" in said:
            moving.add(name)
        say(f"evicting vmi/{name}: {said}")
    await _wait_empty(api, node, args.timeout, lambda name: _evict(api, name, wait_s, False), moving, began)
    say(f"node/{node} drained")
    return 0


async def _evict(api: ApiClient, name: str, grace_s: int | None, ignore_strategy: bool) -> str:
    try:
        request = EvictRequest(name=name, grace_period=grace_s, ignore_eviction_strategy=ignore_strategy)
        return (await api.call("vmi", "evict", request, Ack)).message
    except ApiError as exc:
        if exc.code is not Code.NOT_FOUND:
            raise
        return f"VMI {name} is gone already"


def migrate_again(vmis: list[VMI], moving: set[str], since: float) -> list[tuple[str, str]]:
    """(name, why) of the instances being migrated off whose migration failed after ``since`` (wall
    clock) and none moves them now: evicted again, a new migration each, as KubeVirt's evacuation
    tries again (pure)."""
    out = []
    for vmi in vmis:
        state = vmi.migration_state
        if vmi.name in moving and state is not None and state.phase is MigrationPhase.FAILED \
                and (state.end_timestamp or 0.0) > since:
            out.append((vmi.name, state.reason))
    return out


async def _wait_empty(api: ApiClient, node: str, limit: float, evict: Callable[[str], Awaitable[str]] | None = None,
                      moving: set[str] | None = None, since: float = 0.0) -> None:
    """evict and moving: the instances being migrated off, evicted again when a migration of theirs fails
    (one that failed after ``since``, wall clock)."""
    start = time.monotonic()
    tried = since or time.time()
    last, last_print = "", start
    while True:
        nodes = (await api.call("node", "list", {}, NodeList)).items
        ready = next((n.ready for n in nodes if n.node.name == node), False)
        vmis = (await api.call("vmi", "list", {}, VMIList)).items
        left = still_there(vmis, node, ready)
        if not left:
            return
        if evict is not None and moving and time.time() - tried >= RETRY_MIGRATION_S:
            checked = time.time()
            for name, why in migrate_again(vmis, moving, tried):
                say(f"  vmi/{name}: its migration failed ({why}); migrating it again: {await evict(name)}")
            tried = checked
        now = time.monotonic()
        state = f"waiting for {len(left)} VMI{'s' if len(left) != 1 else ''} to leave: {', '.join(left)}"
        if state != last or now - last_print >= 10:
            say(f"  node/{node}: {state} ({now - start:.1f}s)")
            last, last_print = state, now
        if limit and now - start > limit:
            raise ApiError(Code.UNAVAILABLE, f"timed out after {limit:.0f}s draining node {node} (the node stays "
                                             f"cordoned; still there: {', '.join(left)})")
        await asyncio.sleep(POLL_S)
