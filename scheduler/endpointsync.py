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
from servicekit.informer import Informer
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
    def __init__(self, store: Store, *, vmi_changes: Callable[[], AsyncIterator[object]] | None = None,
                 vmis: Callable[[], Iterable[VMI]] | None = None) -> None:
        """vmi_changes and vmis: that VMIs changed, and every VMI now, from the leader's own watch and
        cache (Scheduler.vmi_changes, Scheduler.vmis); without both, an informer of its own, which
        delivers and decodes every VMI change once more."""
        self.store = store
        self.vmi_changes = vmi_changes
        self.vmis = vmis
        self.services: Bucket[Service] = store.bucket(subjects.BUCKET_SERVICES, Service)
        self.endpoints: Bucket[Endpoints] = store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints)
        # Each sync read the Services and Endpoints (and, once a Service selected, every VMI) afresh:
        # a consumer made on the server for each bucket at every VMI change, 10 a second in a launch
        # burst. One watch of each per term now, and the syncs read their caches.
        self._new_term()  # for a sync outside run; run starts each term afresh

    def _new_term(self) -> list[Informer[Service] | Informer[Endpoints] | Informer[VMI]]:
        """Fresh caches (a term starts from what the buckets hold now): Services, Endpoints, and the
        VMIs unless the leader's watch and cache stand in for them."""
        self._services: Informer[Service] = Informer(self.services)
        self._endpoints: Informer[Endpoints] = Informer(self.endpoints)
        leaders = self.vmi_changes is not None and self.vmis is not None
        self._own_vmis: Informer[VMI] | None = None if leaders else Informer(self.store.vmis)
        return [self._services, self._endpoints, *([self._own_vmis] if self._own_vmis else [])]

    async def run(self) -> None:
        """Until cancelled (the term ends); a new term starts from fresh caches."""
        informers = self._new_term()
        if self._own_vmis is not None:
            vmi_changes: AsyncIterator[object] = self._own_vmis.changes()
        else:
            assert self.vmi_changes is not None  # _new_term: no informer of its own only with both
            vmi_changes = self.vmi_changes()
        try:
            await resync_on_changes([self._services.changes(), vmi_changes, self._endpoints.changes()],
                                    self.sync, "endpoints")
        finally:
            for informer in informers:  # their watches end with the term
                await informer.stop()

    async def _current_vmis(self) -> list[VMI]:
        if self._own_vmis is not None:
            return [e.value for e in await self._own_vmis.items()]
        assert self.vmis is not None  # _new_term: no informer of its own only with both
        return list(self.vmis())

    async def sync(self) -> None:
        services = {e.key: e.value for e in await self._services.items()}
        # no Service selects anything (the common case): no VMI matters
        selecting = any(s.selector for s in services.values())
        vmis = await self._current_vmis() if selecting else []
        current = {e.key: e.value for e in await self._endpoints.items()}
        plan = plan_endpoints(services, vmis, current)
        for endpoints in plan.write:
            await self.endpoints.put(endpoints.name, endpoints)
            log.info("endpoints", service=endpoints.name,
                     addresses=[a.ip for s in endpoints.subsets for a in s.addresses])
        for name in plan.delete:
            await self.endpoints.delete(name)
