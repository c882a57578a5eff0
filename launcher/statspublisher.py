"""The VMI's libvirt statistics on the bus (``virtbus.stats.<node>.<vmi>``): a sample whenever the
node's handler asks for one (``virtbus.stats.<node>``, as Prometheus scrapes its /metrics), and one
every SAMPLE_EVERY_S unasked, for whoever else listens: the first a period after the domain started,
not as it starts, when nobody has asked yet (a burst of a hundred launches paid for a hundred samples
nobody read, ~5 ms of CPU each in QEMU, libvirtd and the launcher).

A sample wakes the launcher, its libvirtd and QEMU (libvirt asks QEMU for each counter): taken every
5 s regardless, that was most of what an idle VM's virtbus processes cost. KubeVirt's virt-handler
also collects its VMIs' statistics when it is scraped, not on a timer of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from proto import subjects
from proto.stats import from_libvirt

log = structlog.get_logger()
SAMPLE_EVERY_S = 60.0  # unasked: the bus's listeners see each VM at least this often


class StatsPublisher:
    def __init__(self, nc: Any, *, node: str, vmi: str, uid: str,
                 record: Callable[[], Awaitable[dict[str, object]]], nic_names: Callable[[], dict[str, str]],
                 every: float = SAMPLE_EVERY_S) -> None:
        """record: libvirt's statistics record of the domain now; nic_names: tap -> the spec's interface
        name (KubeVirt labels a NIC by the latter)."""
        self.nc = nc
        self.node = node
        self.vmi = vmi
        self.uid = uid
        self.record = record
        self.nic_names = nic_names
        self.every = every
        self.asked = asyncio.Event()

    async def run(self) -> None:
        async def on_ask(msg: Any) -> None:
            self.asked.set()

        sub = await self.nc.subscribe(subjects.stats_wanted(self.node), cb=on_ask)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.asked.wait(), self.every)
                self.asked.clear()
                await self.publish()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def publish(self) -> None:
        """One sample now; a failure is logged (the next ask or period tries again)."""
        try:
            sample = from_libvirt(await self.record(), vmi=self.vmi, uid=self.uid, node=self.node, now=time.time())
            names = self.nic_names()
            sample = msgspec.structs.replace(sample, nets=[
                msgspec.structs.replace(n, name=names.get(n.name, n.name)) for n in sample.nets])
            await self.nc.publish(subjects.stats(self.node, self.vmi), msgspec.json.encode(sample))
        except Exception:
            log.warning("stats failed", exc_info=True)
