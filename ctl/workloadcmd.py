"""``virtbus get|scale|delete vmirs|vmpool``: KubeVirt's VirtualMachineInstanceReplicaSets and
VirtualMachinePools (proto.workloads), applied with ``virtbus apply -f``."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kindnames, render
from ctl.client import ApiClient
from ctl.progress import wait_for
from ctl.stdout import say
from proto import resources
from proto.api import Ack, NameRequest, VMIList, VMList
from proto.selector import LabelSelector
from proto.workloads import (
    POOL_API_VERSIONS,
    POOL_KIND,
    RS_KIND,
    PoolList,
    PoolReply,
    PoolView,
    ReplicaSetList,
    ReplicaSetReply,
    ReplicaSetView,
    ScaleRequest,
)

KINDS = kindnames.WORKLOADS
API = {RS_KIND: "vmirs", POOL_KIND: "vmpool"}
API_NAMES = {"vmirs": "virtualmachineinstancereplicaset", "vmpool": "virtualmachinepool"}  # as kubectl prints


def kind_of(name: str) -> str | None:
    return KINDS.get(name.lower())


def add_parser(sub: Any) -> None:
    s = sub.add_parser("scale", help="set the replicas of a vmirs or vmpool")
    s.add_argument("kind", choices=sorted(KINDS))
    s.add_argument("name")
    s.add_argument("--replicas", type=int, required=True)


def is_workload(kind: object) -> bool:
    return kind in API


async def apply(api: ApiClient, kind: str, body: bytes) -> None:
    if API[kind] == "vmirs":
        rs = (await api.call("vmirs", "apply", body, ReplicaSetReply)).item
        say(f"virtualmachineinstancereplicaset/{rs.replica_set.name} applied ({rs.replica_set.replicas} replicas)")
    else:
        pool = (await api.call("vmpool", "apply", body, PoolReply)).item
        say(f"virtualmachinepool/{pool.pool.name} applied ({pool.pool.replicas} replicas)")


def _selector(chosen: LabelSelector) -> dict[str, Any]:
    return resources._compact({"matchLabels": dict(chosen.match_labels), "matchExpressions": [
        resources._compact({"key": r.key, "operator": r.operator, "values": list(r.values)})
        for r in chosen.match_expressions]})


def rs_object(view: ReplicaSetView) -> dict[str, Any]:
    rs = view.replica_set
    template = {"metadata": resources._compact({"labels": dict(rs.template.labels)}),
                "spec": resources.vmi_spec(rs.template)}
    return {"apiVersion": resources.KUBEVIRT_API, "kind": RS_KIND,
            "metadata": resources._compact({"name": rs.name, "creationTimestamp": resources.timestamp(rs.created_at)}),
            "spec": {"replicas": rs.replicas, "selector": _selector(rs.selector), "template": template},
            "status": {"replicas": view.status.replicas, "readyReplicas": view.status.ready_replicas}}


def pool_object(view: PoolView) -> dict[str, Any]:
    pool = view.pool
    vm = resources.vm_manifest(pool.template)
    return {"apiVersion": POOL_API_VERSIONS[0], "kind": POOL_KIND,
            "metadata": resources._compact({"name": pool.name,
                                            "creationTimestamp": resources.timestamp(pool.created_at)}),
            "spec": {"replicas": pool.replicas, "selector": _selector(pool.selector),
                     "virtualMachineTemplate": {"metadata": vm["spec"]["template"].get("metadata", {}),
                                                "spec": vm["spec"]}},
            "status": {"replicas": view.status.replicas, "readyReplicas": view.status.ready_replicas}}


async def get(api: ApiClient, kind: str, name: str | None, output: str | None) -> None:
    rows: list[list[str]] = []
    objs: list[dict[str, Any]] = []
    if kind == "vmirs":
        sets = ([(await api.call("vmirs", "get", NameRequest(name=name), ReplicaSetReply)).item] if name
                else (await api.call("vmirs", "list", {}, ReplicaSetList)).items)
        objs = [rs_object(v) for v in sets]
        rows = [[v.replica_set.name, str(v.replica_set.replicas), str(v.status.replicas),
                 str(v.status.ready_replicas), render.age(v.replica_set.created_at)] for v in sets]
    else:
        pools = ([(await api.call("vmpool", "get", NameRequest(name=name), PoolReply)).item] if name
                 else (await api.call("vmpool", "list", {}, PoolList)).items)
        objs = [pool_object(v) for v in pools]
        rows = [[v.pool.name, str(v.pool.replicas), str(v.status.replicas), str(v.status.ready_replicas),
                 render.age(v.pool.created_at)] for v in pools]
    if output is not None and render.is_structured(output):
        say(render.objects(objs, output, one=bool(name)))
    else:
        say(render.table(["NAME", "DESIRED", "CURRENT", "READY", "AGE"], rows))


async def scale(api: ApiClient, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    request = ScaleRequest(name=args.name, replicas=args.replicas)
    if kind == "vmirs":
        rs = (await api.call("vmirs", "scale", request, ReplicaSetReply)).item
        say(f"virtualmachineinstancereplicaset/{rs.replica_set.name} scaled to {rs.replica_set.replicas}")
    else:
        pool = (await api.call("vmpool", "scale", request, PoolReply)).item
        say(f"virtualmachinepool/{pool.pool.name} scaled to {pool.pool.replicas}")
    return 0


async def members(api: ApiClient, kind: str, name: str) -> tuple[set[str], set[str]]:
    """(the VMs, the instances) the set or pool made that are still there: a pool's VMs and their
    instances (named as their VMs), a replica set's instances."""
    vmis = (await api.call("vmi", "list", {}, VMIList)).items
    if kind == "vmirs":
        return set(), {v.name for v in vmis if v.owner == name}
    vms = {v.vm.spec.name for v in (await api.call("vm", "list", {}, VMList)).items if v.vm.owner == name}
    return vms, {v.name for v in vmis if v.name in vms}


async def delete(api: ApiClient, kind: str, name: str, *, wait: bool = False, patience: float = 120.0) -> None:
    """With wait, until what it made is gone too (its VMs, their instances stopped and cleaned up),
    as ``kubectl delete`` waits for the objects its owner references take with it."""
    vms, vmis = await members(api, kind, name) if wait else (set(), set())
    say((await api.call(kind, "delete", NameRequest(name=name), Ack)).message)
    if not wait:
        return

    async def probe() -> tuple[bool, str]:
        left_vms, left_vmis = await members_left(api, vms, vmis)
        left = [f"{len(names)} {what}" for names, what in ((left_vms, "VMs"), (left_vmis, "instances")) if names]
        return not left, " and ".join(left) + " left" if left else "everything it made is gone"

    await wait_for(f"{API_NAMES[kind]}/{name}", probe, patience)


async def members_left(api: ApiClient, vms: set[str], vmis: set[str]) -> tuple[set[str], set[str]]:
    left_vmis = {v.name for v in (await api.call("vmi", "list", {}, VMIList)).items} & vmis
    if not vms:
        return set(), left_vmis
    return {v.vm.spec.name for v in (await api.call("vm", "list", {}, VMList)).items} & vms, left_vmis
