"""The scheduler's /metrics: scheduling latency, queue depth, binds, failures, leader state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
