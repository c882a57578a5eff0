"""The node's /metrics, with KubeVirt's metric names and labels so its dashboards work: the VMIs'
libvirt statistics (from their launchers, over the bus) and the phase count of this node's VMIs.

A scrape asks the node's launchers for fresh samples and waits up to ANSWER_WAIT_S for the Running
VMIs' answers, as KubeVirt's virt-handler collects its VMIs' statistics when scraped: what Prometheus
stores is at most that old, and an idle node that nobody scrapes samples nothing (each launcher
still publishes once a minute unasked, launcher.statspublisher)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import msgspec
import structlog
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handler import nodevmis
from handler.warmmemory import WarmMemory
from proto import subjects
from proto.state import VMI, Phase
from proto.stats import VMIStats
from proto.subjects import is_dns1123_label
from servicekit.store import Store

log = structlog.get_logger()
FRESH_S = 150.0  # samples older than this belong to a VMI that is gone (launchers say one every 60 s unasked)
ANSWER_WAIT_S = 1.0  # a scrape waits this long at most for the launchers' fresh samples
REUSE_S = 1.0  # scrapes closer together than this share one round of asking
NAMESPACE = "default"


class VMICollector(Collector):
    def __init__(self, node: str, refresh: Callable[[], None] = lambda: None) -> None:
        """refresh: fresh samples into ``samples`` before a scrape is answered (blocking, bounded)."""
        self.node = node
        self.refresh = refresh
        self.samples: dict[str, VMIStats] = {}
        self.received: dict[str, float] = {}  # VMI -> when its last sample came (monotonic)
        self.vmis: dict[str, VMI] = {}

    def add(self, sample: VMIStats) -> None:
        self.samples[sample.vmi] = sample
        self.received[sample.vmi] = time.monotonic()

    def forget(self, vmi: str) -> None:
        self.vmis.pop(vmi, None)
        self.samples.pop(vmi, None)
        self.received.pop(vmi, None)

    def unanswered(self, since: float) -> list[str]:
        """The Running VMIs with no sample received since ``since`` (monotonic)."""
        return [name for name, vmi in self.vmis.items()
                if vmi.phase is Phase.RUNNING and self.received.get(name, -1.0) < since]

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        now = time.time()
        live = [s for s in self.samples.values() if now - s.timestamp < FRESH_S]
        base = ["node", "namespace", "name"]

        def family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str,
                   extra: list[str] | None = None) -> CounterMetricFamily | GaugeMetricFamily:
            return kind(name, doc, labels=base + (extra or []))

        vcpu = family(CounterMetricFamily, "kubevirt_vmi_vcpu_seconds", "vCPU time", ["id", "state"])
        mem_domain = family(GaugeMetricFamily, "kubevirt_vmi_memory_domain_bytes", "memory of the domain")
        mem_rss = family(GaugeMetricFamily, "kubevirt_vmi_memory_resident_bytes", "resident memory of QEMU")
        mem_avail = family(GaugeMetricFamily, "kubevirt_vmi_memory_available_bytes", "memory the guest sees")
        net = {k: family(CounterMetricFamily, f"kubevirt_vmi_network_{k}", f"network {k}", ["interface"])
               for k in ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets",
                         "receive_errors", "transmit_errors", "receive_packets_dropped", "transmit_packets_dropped")}
        storage = {k: family(CounterMetricFamily, f"kubevirt_vmi_storage_{k}", f"storage {k}", ["drive"])
                   for k in ("read_traffic_bytes", "write_traffic_bytes", "iops_read", "iops_write",
                             "read_times_seconds", "write_times_seconds")}
        for s in live:
            who = [self.node, NAMESPACE, s.vmi]
            for i, seconds in enumerate(s.vcpu_seconds):
                vcpu.add_metric([*who, str(i), "running"], seconds)
            mem_domain.add_metric(who, s.memory_domain_bytes)
            mem_rss.add_metric(who, s.memory_resident_bytes)
            mem_avail.add_metric(who, s.memory_available_bytes)
            for n in s.nets:
                for key, value in (("receive_bytes", n.rx_bytes), ("transmit_bytes", n.tx_bytes),
                                   ("receive_packets", n.rx_packets), ("transmit_packets", n.tx_packets),
                                   ("receive_errors", n.rx_errors), ("transmit_errors", n.tx_errors),
                                   ("receive_packets_dropped", n.rx_dropped),
                                   ("transmit_packets_dropped", n.tx_dropped)):
                    net[key].add_metric([*who, n.name], value)
            for b in s.blocks:
                for key, fvalue in (("read_traffic_bytes", float(b.read_bytes)),
                                    ("write_traffic_bytes", float(b.write_bytes)),
                                    ("iops_read", float(b.read_requests)), ("iops_write", float(b.write_requests)),
                                    ("read_times_seconds", b.read_seconds), ("write_times_seconds", b.write_seconds)):
                    storage[key].add_metric([*who, b.name], fvalue)
        phases = GaugeMetricFamily("kubevirt_vmi_phase_count", "VMIs on this node by phase",
                                   labels=["node", "phase", "os", "workload", "flavor"])
        for phase, count in sorted(Counter(v.phase.value.lower() for v in self.vmis.values()).items()):
            phases.add_metric([self.node, phase, "<none>", "<none>", "<none>"], count)
        yield from (vcpu, mem_domain, mem_rss, mem_avail, *net.values(), *storage.values(), phases)


class WarmMemoryCollector(Collector):
    """The node's warm memory (handler.warmmemory): what it holds now, and at most."""

    def __init__(self, node: str, warm: WarmMemory) -> None:
        self.node = node
        self.warm = warm

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily("virtbus_node_warm_memory_bytes",
                                 "memory the handler holds touched for the node's next launches", labels=["node"])
        held.add_metric([self.node], self.warm.held)
        size = GaugeMetricFamily("virtbus_node_warm_memory_size_bytes",
                                 "what the handler holds at most (--warm-memory)", labels=["node"])
        size.add_metric([self.node], self.warm.size)
        yield from (held, size)


_decoder = msgspec.json.Decoder(VMIStats)


def sample_from(node: str, subject: str, data: bytes) -> VMIStats | None:
    """A published stats sample, if it decodes and names the VMI of the subject it came on (anyone may
    publish there); else None, with a log line."""
    try:
        sample = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        log.warning("stats sample set aside", subject=subject[:200], reason=str(exc))
        return None
    if not is_dns1123_label(sample.vmi) or subject != subjects.stats(node, sample.vmi):
        log.warning("stats sample set aside", subject=subject[:200], reason="it names another VMI")
        return None
    return sample


class NodeMetrics:
    def __init__(self, store: Store, node: str, answer_wait: float = ANSWER_WAIT_S) -> None:
        self.store = store
        self.answer_wait = answer_wait
        self.collector = VMICollector(node, self.refresh)
        self.registry = CollectorRegistry()  # this process's own, never the global one
        self.registry.register(self.collector)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.arrived = asyncio.Event()
        self.round: asyncio.Future[None] | None = None
        self.round_at = -REUSE_S

    def refresh(self) -> None:
        """From the HTTP server's thread: a round of asking on the handler's loop, waited for."""
        loop = self.loop
        if loop is None or threading.get_ident() == self.loop_thread:
            return  # not running yet, or called on the loop itself (it would wait for itself)
        with contextlib.suppress(Exception):  # a scrape answers with what there is, whatever happened
            asyncio.run_coroutine_threadsafe(self.gather(), loop).result(self.answer_wait + 1.0)

    async def gather(self) -> None:
        """Ask the node's launchers for samples; back once every Running VMI answered, or after
        answer_wait. Scrapes within REUSE_S of a round share it."""
        now = time.monotonic()
        if self.round is None or now - self.round_at >= REUSE_S:
            self.round_at = now
            self.round = asyncio.ensure_future(self._ask(now))
        await asyncio.shield(self.round)

    async def _ask(self, since: float) -> None:
        await self.store.nc.publish(subjects.stats_wanted(self.collector.node), b"")
        deadline = since + self.answer_wait
        while self.collector.unanswered(since) and (left := deadline - time.monotonic()) > 0:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    async def run(self) -> None:
        async def on_stats(msg: Msg) -> None:
            sample = sample_from(self.collector.node, msg.subject, msg.data)
            if sample is None:
                return
            self.collector.add(sample)
            self.arrived.set()

        self.loop, self.loop_thread = asyncio.get_running_loop(), threading.get_ident()
        sub = await self.store.nc.subscribe(subjects.stats_of_node(self.collector.node), cb=on_stats)
        try:
            async for change in nodevmis.informer(self.store, self.collector.node).changes():
                name = nodevmis.vmi_name(change.key)
                if change.value is not None and change.value.vmi.node_name == self.collector.node:
                    self.collector.vmis[name] = change.value.vmi
                else:
                    self.collector.forget(name)
        finally:
            self.loop = None
            await sub.unsubscribe()
            await asyncio.sleep(0)
