"""The cluster's configuration in the CLI: ``apply -f`` of a KubeVirt CR (kind KubeVirt), and
``get kubevirt`` as ``kubectl get kubevirt`` prints it (``-o json|yaml``: the CR, which applies back)."""

from __future__ import annotations

from ctl import render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import clusterconfig
from proto.clusterconfig import ClusterConfigReply
from proto.errors import ApiError, Code

KINDS = clusterconfig.KINDS


def is_kubevirt(kind: object) -> bool:
    return kind == clusterconfig.KIND


async def apply(api: ApiClient, body: bytes) -> None:
    item = (await api.call("kubevirt", "apply", body, ClusterConfigReply)).item
    say(f"kubevirt/{item.name} applied (cpuAllocationRatio {item.cpu_allocation_ratio})")


async def get(api: ApiClient, name: str | None, output: str | None) -> None:
    item = (await api.call("kubevirt", "get", {}, ClusterConfigReply)).item
    if name is not None and name != item.name:
        raise ApiError(Code.NOT_FOUND, f"kubevirt {name!r} not found (the cluster's is {item.name!r})")
    if output is not None and render.is_structured(output):
        say(render.objects([clusterconfig.kubevirt_object(item)], output, one=True))
        return
    say(render.table(["NAME", "AGE", "PHASE", "CPU-ALLOCATION-RATIO"],
                     [[item.name, render.age(item.updated_at) if item.updated_at else "<default>", "Deployed",
                       str(item.cpu_allocation_ratio)]]))
