"""The endpoints controller: every Service with a selector has Endpoints listing the ready VMIs it
selects, kept as they start, stop, pause and move (Kubernetes' endpoints controller). Leader-only.

Each sync recomputes every Service's Endpoints from the VMIs and writes only what changed, so an
Endpoints value changes exactly when a Service's set of addresses does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from proto import subjects
from proto.services import endpoints_for
from proto.state import VMI, Endpoints, Service
from servicekit.resync import resync_on_changes
from servicekit.store import Bucket, Store

log = structlog.get_logger()


@dataclass(frozen=True)
class EndpointsPlan:
    write: list[Endpoints]
    delete: list[str]


def plan_endpoints(services: Mapping[str, Service], vmis: Iterable[VMI],
                   current: Mapping[str, Endpoints]) -> EndpointsPlan:
    """Pure: the Endpoints to write (new or changed) and to delete (their Service is gone, or now
    has no selector; hand-written ones are the user's and stay)."""
    vmis = list(vmis)
    write = []
    for name, service in sorted(services.items()):
        if not service.selector:
            continue
        wanted = endpoints_for(service, vmis)
        if current.get(name) != wanted:
            write.append(wanted)
    delete = [name for name, have in sorted(current.items()) if not have.manual
              and (name not in services or not services[name].selector)]
    return EndpointsPlan(write=write, delete=delete)


class EndpointsController:
    def __init__(self, store: Store, *, vmi_changes: Callable[[], AsyncIterator[object]] | None = None) -> None:
        """vmi_changes: that VMIs changed, from the leader's own watch (Scheduler.vmi_changes); without
        it a watch of its own, which delivers and decodes every VMI change once more."""
        self.store = store
        self.vmi_changes = vmi_changes
        self.services: Bucket[Service] = store.bucket(subjects.BUCKET_SERVICES, Service)
        self.endpoints: Bucket[Endpoints] = store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints)

    async def run(self) -> None:
        vmis = self.vmi_changes() if self.vmi_changes is not None else self.store.vmis.watch()
        await resync_on_changes([self.services.watch(), vmis, self.endpoints.watch()],
                                self.sync, "endpoints")

    async def sync(self) -> None:
        services = {e.key: e.value for e in await self.services.items()}
        # no Service selects anything (the common case): no VMI matters, and reading every one on
        # every VMI change was most of the bus's work in a burst of binds (bench/binder.py)
        selecting = any(s.selector for s in services.values())
        vmis = [e.value for e in await self.store.vmis.items()] if selecting else []
        current = {e.key: e.value for e in await self.endpoints.items()}
        plan = plan_endpoints(services, vmis, current)
        for endpoints in plan.write:
            await self.endpoints.put(endpoints.name, endpoints)
            log.info("endpoints", service=endpoints.name,
                     addresses=[a.ip for s in endpoints.subsets for a in s.addresses])
        for name in plan.delete:
            await self.endpoints.delete(name)
