"""The source's half of a live migration: its libvirtd moves the running domain to the target
launcher's libvirtd, peer to peer, through launcher.migrationproxy's sockets; memory, then the disks
that live with the run, are copied while the guest runs on, then the guest pauses for a moment and
resumes on the target. The domain's definition goes with it, its paths moved to the target node's.

It runs with the cluster's settings as the migration started (proto.state.MigrationOptions, the
KubeVirt CR's spec.configuration.migrations; KubeVirt's defaults unless set): a bandwidth limit,
auto-converge, and its timeouts: it is aborted when it makes no progress for ``progress_timeout``
seconds, or runs longer than ``completion_timeout_per_gib`` for each GiB it has to move. Never
post-copy.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt
import structlog

from launcher.migrationproxy import DISKS, LIBVIRT, MEMORY, SOURCE_SOCKETS
from proto.state import MigrationOptions

log = structlog.get_logger()
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
WATCH_S = 1.0  # how often the job's progress is looked at
GIB = 1 << 30
MIB = 1 << 20
DEFAULTS = MigrationOptions()  # KubeVirt's


class MigrationFailed(RuntimeError):
    pass


def dest_xml(xml: str, source_dir: str, target_dir: str) -> str:
    """Pure: the domain as the target defines it, every path under the source node's directory moved
    to the target node's (its disks, its serial log: the same layout under each node's)."""
    return xml.replace(source_dir.rstrip("/") + "/", target_dir.rstrip("/") + "/")


def copied_disks(xml: str) -> list[str]:
    """Pure: the disks whose data moves with the guest: every writable file disk (containerDisk
    overlays, emptyDisks). Read-only ones (cdroms, cloud-init's ISOs) are made alike by the target."""
    out = []
    for disk in ET.fromstring(xml).iter("disk"):
        target = disk.find("target")
        if disk.get("device", "disk") == "disk" and disk.find("readonly") is None and target is not None \
                and disk.find("source") is not None:
            out.append(target.get("dev", ""))
    return [dev for dev in out if dev]


def params(xml: str, source_dir: str, target_dir: str,
           options: MigrationOptions = DEFAULTS) -> tuple[dict[str, Any], int]:
    """Pure: libvirt's migration parameters and flags for this domain."""
    disks = copied_disks(xml)
    there = dest_xml(xml, source_dir, target_dir)
    out: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: f"unix://{SOURCE_SOCKETS[MEMORY]}",
                           libvirt.VIR_MIGRATE_PARAM_DEST_XML: there, libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: there}
    flags = FLAGS
    if disks:
        out[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
        out[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = f"unix://{SOURCE_SOCKETS[DISKS]}"
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if options.bandwidth_per_migration:  # libvirt's is in MiB/s: rounded up, so a small limit is not none
        out[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = -(-options.bandwidth_per_migration // MIB)
    if options.allow_auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    return out, flags


def dest_uri() -> str:
    return f"qemu+unix:///system?socket={SOURCE_SOCKETS[LIBVIRT]}"


@dataclass
class Watch:
    """Pure: whether a migration still makes progress, from its job's figures over time."""

    started: float
    limit_s: float
    progress_timeout: float = float(DEFAULTS.progress_timeout)
    remaining: int | None = None
    progressed_at: float = 0.0

    def check(self, now: float, remaining: int | None) -> str | None:
        """Why to abort, or None."""
        if remaining is not None and (self.remaining is None or remaining < self.remaining):
            self.remaining, self.progressed_at = remaining, now
        if not self.progressed_at:
            self.progressed_at = now
        if now - self.progressed_at > self.progress_timeout:
            return f"no progress for {self.progress_timeout:.0f}s"
        if now - self.started > self.limit_s:
            return f"not done within {self.limit_s:.0f}s"
        return None


def time_limit(memory: int, disks: int, per_gib: float = DEFAULTS.completion_timeout_per_gib) -> float:
    """KubeVirt's completion timeout: per GiB to move, at least one GiB's worth."""
    return per_gib * max(1.0, (memory + disks) / GIB)


async def send(dom: Any, source_dir: str, target_dir: str, memory: int, abort: asyncio.Event,
               options: MigrationOptions = DEFAULTS) -> None:
    """Move the domain; returns once it runs on the target. Raises MigrationFailed (the guest runs on
    here then), after aborting the job when asked to (``abort``) or when it stalls."""
    xml = await asyncio.to_thread(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    values, flags = params(xml, source_dir, target_dir, options)
    # what the disks that move hold counts too, as KubeVirt counts it: a big emptyDisk takes its time
    allocated = await asyncio.to_thread(_allocated, dom, values.get(libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS, []))
    watch = Watch(started=time.monotonic(), limit_s=time_limit(memory, allocated, options.completion_timeout_per_gib),
                  progress_timeout=options.progress_timeout)
    job = asyncio.ensure_future(asyncio.to_thread(dom.migrateToURI3, dest_uri(), values, flags))
    why = ""
    while not job.done():
        await asyncio.wait([job], timeout=WATCH_S)
        if job.done():
            break
        stats = await asyncio.to_thread(_job_stats, dom)
        why = "the migration was cancelled" if abort.is_set() else \
            watch.check(time.monotonic(), _remaining(stats)) or ""
        if why:
            log.warning("aborting the migration", reason=why)
            await asyncio.to_thread(_abort, dom)
            break
    try:
        await job
    except libvirt.libvirtError as exc:
        raise MigrationFailed(why or str(exc).splitlines()[0][:500]) from None
    if why and not abort.is_set():  # it finished as it was being aborted: it did move
        log.info("migration finished as it was aborted", reason=why)


def _allocated(dom: Any, devs: list[str]) -> int:
    """The bytes the disks hold (their allocation), those libvirt can say."""
    total = 0
    for dev in devs:
        try:
            total += int(dom.blockInfo(dev)[1])
        except libvirt.libvirtError:
            pass
    return total


def _job_stats(dom: Any) -> dict[str, Any]:
    try:
        return dict(dom.jobStats())
    except libvirt.libvirtError:
        return {}


def _remaining(stats: dict[str, Any]) -> int | None:
    left = [stats[k] for k in ("memory_remaining", "disk_remaining") if isinstance(stats.get(k), int)]
    return sum(left) if left else None


def _abort(dom: Any) -> None:
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        log.info("abort: no job to abort", error=str(exc).splitlines()[0][:200])
