"""The scheduler's /metrics: scheduling latency, queue depth, binds, failures, leader state, and
KubeVirt's virt-controller figures of live migrations (read from the migration controller's records
at each scrape, on the leader)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proto.migrations import Migration
from proto.schema import NAMESPACE
from proto.state import MigrationPhase

# KubeVirt's gauges of migrations by phase (Scheduled and TargetReady count as scheduling, as its own do)
_IN_PHASE = {"pending": (MigrationPhase.PENDING,),
             "scheduling": (MigrationPhase.SCHEDULING, MigrationPhase.SCHEDULED, MigrationPhase.TARGET_READY),
             "running": (MigrationPhase.RUNNING,)}


class MigrationCollector(Collector):
    """kubevirt_vmi_migrations_in_{pending,scheduling,running}_phase, and kubevirt_vmi_migration_succeeded
    and _failed (1 for each finished migration the cluster keeps, labelled as KubeVirt labels them)."""

    def __init__(self) -> None:
        self.items: Callable[[], Iterable[Migration]] = lambda: ()  # the leader's records; none elsewhere

    def collect(self) -> Iterator[Metric]:
        items = list(self.items())
        for name, phases in _IN_PHASE.items():
            family = GaugeMetricFamily(f"kubevirt_vmi_migrations_in_{name}_phase",
                                       f"migrations in the {name} phase")
            family.add_metric([], sum(1 for m in items if m.phase in phases))
            yield family
        for outcome, phase in (("succeeded", MigrationPhase.SUCCEEDED), ("failed", MigrationPhase.FAILED)):
            family = GaugeMetricFamily(f"kubevirt_vmi_migration_{outcome}", f"a migration that {outcome}",
                                       labels=["vmi", "namespace", "vmim"])
            for m in items:
                if m.phase is phase:
                    family.add_metric([m.vmi_name, NAMESPACE, m.name], 1)
            yield family


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # this process's own, never the global one
        self.latency = Histogram("virtbus_scheduler_scheduling_latency_seconds",
                                 "from instance creation to its bind", registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.binds = Counter("virtbus_scheduler_binds", "instances bound to a node", registry=self.registry)
        self.conflicts = Counter("virtbus_scheduler_bind_conflicts", "binds lost to another scheduler (CAS)",
                                 registry=self.registry)
        self.unschedulable = Counter("virtbus_scheduler_unschedulable", "attempts that found no node",
                                     registry=self.registry)
        self.queue = Gauge("virtbus_scheduler_queue_depth", "instances waiting for a node", registry=self.registry)
        # Set by leader election (scheduler.leader): only the leader runs the controllers and binds.
        self.leader = Gauge("virtbus_scheduler_leader", "1 when this scheduler leads (runs the controllers and binds)",
                            registry=self.registry)
        self.leader.set(0)
        self.migrations = MigrationCollector()
        self.registry.register(self.migrations)
