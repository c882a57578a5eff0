"""One VMI's life in its launcher: prepare disks and NICs, boot the domain in a private libvirtd,
report phases by CAS, serve the console log, stop on request, and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import libvirt
import structlog

from launcher import disks, lifecycle, memory, ownvmi, priority, teardown
from launcher.backup import SnapshotTaker
from launcher.console import ConsoleInput, ConsoleTail
from launcher.domain import CONSOLE_SOCKET, VNC_SOCKET, compose_domain_xml, plan_domain
from launcher.guestnics import GuestNics
from launcher.hotplug import LibvirtDisks
from launcher.keepers import Keepers
from launcher.launchclock import LaunchClock
from launcher.leasekeeper import LeaseKeeper, LeaseNotTaken
from launcher.libvirtd import PrivateLibvirtd, lower_domain
from launcher.livemigration import MigrationOver, Source, Target
from launcher.powerplan import Done
from launcher.reaper import reap_orphans
from launcher.reports import Reports
from launcher.statspublisher import StatsPublisher
from launcher.supervision import DomainFollower
from launcher.vnc import VncServer, libvirt_screenshot
from launcher.volumegrowth import LibvirtSizes
from launcher.volumerecords import InformedRecords
from proto.hotplug import boot_spec
from proto.quantity import parse_bytes
from proto.snapshots import written_volumes
from proto.spec import claims
from proto.state import FINAL_PHASES, VMI, Phase, grace_period
from servicekit import cpugroup, processes, volumedata
from servicekit.informer import shared
from servicekit.nodeclient import NodeApiClient
from servicekit.paths import path_under
from servicekit.store import Store

log = structlog.get_logger()


@dataclass(frozen=True)
class LauncherArgs:
    vmi: str
    uid: str
    node: str
    node_dir: Path
    pod_netns: str
    kvm: bool
    node_netns: str | None = None
    pod_ip: str | None = None  # with its prefix, e.g. 10.244.0.2/24
    pod_gateway: str | None = None
    secondary: tuple[str, ...] = ()  # interface=node bridge=address/prefix[=type=vlan]; no address: layer 2
    ovs_db: str | None = None  # the node's Open vSwitch database, for ovs NICs
    host_disk_dirs: tuple[Path, ...] = ()  # where hostDisks may be, as the node's operator allowed
    guest_cpu_group: Path | None = None  # the node's guests' CPU group (servicekit.cpugroup)
    launch_cpu_group: Path | None = None  # the node's launches' (the launcher is in it; a QEMU ends in it)
    copies_republished: bool = True  # whether the node's shard republishes its copies (launcher.ownvmi)
    migration: str | None = None  # the uid of the live migration this launcher is the target of

    @property
    def vmi_dir(self) -> Path:
        return path_under(self.node_dir / "vmis", self.vmi, what="VMI name")


class Runner:
    def __init__(self, args: LauncherArgs, store: Store) -> None:
        self.args = args
        self.store = store
        self.nodeapi = NodeApiClient(store.nc, args.node)
        self.libvirtd = PrivateLibvirtd(huge_pages=args.kvm,  # under TCG, no THP (launcher.libvirtd)
                                        launch_group=args.launch_cpu_group)
        self.console = ConsoleTail(store.js, args.node, args.vmi, args.uid, args.vmi_dir / "serial.log")
        self.stop_requested = asyncio.Event()
        self.grace = 0  # the seconds a stop gives its guest (proto.state.grace_period), once asked
        self.gone = asyncio.Event()
        # its VMI was ended while it ran (its node's liveness probe failed, handler.probes): the end it says
        self.ended: tuple[Phase, str] | None = None
        self.terminated = asyncio.Event()
        self.fenced = asyncio.Event()
        self.reports = Reports(self.nodeapi, vmi=args.vmi, uid=args.uid, fenced=self.fenced)
        self.keeper: LeaseKeeper | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.nics = GuestNics(vmi=args.vmi, uid=args.uid, pod_netns=args.pod_netns, node_netns=args.node_netns,
                              pod_ip=args.pod_ip, pod_gateway=args.pod_gateway, secondary=args.secondary,
                              ovs_db=args.ovs_db, report=self.reports.interfaces)
        self.started_at = processes.started_at()  # the launch's stages, said with Running
        self.ready_at: float | None = None
        self.clock = LaunchClock(self.started_at)
        records = InformedRecords(shared(store, store.volumes))  # followed only once a keeper needs them
        self.keepers = Keepers(self.libvirtd, LibvirtDisks(), LibvirtSizes(), records, lambda: self.follower.dom,
                               note=self.reports.event, report_volumes=self.reports.volumes,
                               volume_ready=self._volume_ready, node=args.node, volumes_dir=args.node_dir / "volumes")
        self.snapshots: SnapshotTaker | None = None
        self.follower = DomainFollower(self.libvirtd, self.reports.condition, vmi=args.vmi, netns=args.pod_netns,
                                       workdir=args.vmi_dir, on_change=self.keepers.poke)
        # its instance's live migration (launcher.livemigration): the side this launcher is on
        self.target = Target(store.nc, self.nodeapi, vmi=args.vmi, uid=args.uid, node=args.node, node_dir=args.node_dir,
                             migration_uid=args.migration, node_netns=args.node_netns) if args.migration else None
        self.source: Source | None = None

    async def run(self) -> int:
        self.libvirtd.begin(self.args.pod_netns, self.args.vmi_dir)
        # The watch of its own VMI reads it first: that read is the launch's (one read, not two), and
        # a bus that does not answer yet is waited for rather than failing the launch.
        own = ownvmi.changes(self.store, self.args.node, self.args.vmi, republished=self.args.copies_republished)
        try:
            first = await anext(own)
        except BaseException:
            await own.aclose()
            await teardown.stop_libvirtd(self.libvirtd)
            raise
        self.ready_at = time.time()  # connected, and the instance read: the launch's own work begins
        self.clock.mark("ready")
        if isinstance(first, ownvmi.Gone) or first.uid != self.args.uid or first.phase in FINAL_PHASES:
            log.info("instance is gone or finished; nothing to run")
            await own.aclose()
            await teardown.stop_libvirtd(self.libvirtd)
            return 0
        vmi = first
        if self.target is not None:
            self.target.heard(vmi)
            if self.target.over.is_set():
                log.info("no migration to this node under way; nothing to run", why=self.target.why)
                await own.aclose()
                await teardown.stop_libvirtd(self.libvirtd)
                return 0
        # the guest it runs may move on (a target's too, once the guest has arrived)
        self.source = Source(self.store.nc, self.nodeapi, vmi=self.args.vmi, uid=self.args.uid, node=self.args.node,
                             node_dir=self.args.node_dir, domain=lambda: self.follower.dom,
                             memory=parse_bytes(vmi.spec.memory), node_netns=self.args.node_netns,
                             hold=self.keepers.power.hold)
        self.keepers.power.done = Done.at_start(vmi)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        booting = True

        def on_term() -> None:
            self.terminated.set()
            if booting and main is not None:
                main.cancel()  # nothing runs yet that needs an orderly stop

        loop.add_signal_handler(signal.SIGTERM, on_term)
        watcher = asyncio.create_task(self._watch_own(own, vmi))
        served: list[asyncio.Task[None]] = []  # what runs beside the guest (_serve)
        lease: asyncio.Task[str] | None = None
        try:
            try:
                if vmi.spec.high_availability:
                    # before anything can run the guest: a guest without a lease could run twice
                    self.keeper = LeaseKeeper(self.store.vmi_leases, node=self.args.node, vmi=self.args.vmi,
                                              uid=self.args.uid, fence=self._fence)
                    await self.keeper.take()
                    lease = asyncio.create_task(self.keeper.run())
                dom = await (self._receive(vmi) if self.target is not None else self._boot(vmi))
                booting = False
            except MigrationOver as exc:
                log.info("the migration here is over; leaving", why=str(exc))
                return 0
            except asyncio.CancelledError:
                if self.target is not None:  # the instance runs on at its source: only the migration fails
                    await self.target.failed("the target's launcher was terminated")
                    return 1
                await self.reports.phase(Phase.FAILED, "launcher terminated while starting the domain")
                return 1
            except LeaseNotTaken as exc:
                await self.reports.phase(Phase.FAILED, str(exc))
                return 1
            except Exception as exc:
                log.exception("could not start the domain")
                if self.target is not None:
                    await self.target.failed(f"the target: {lifecycle.launch_failure(exc)}")
                    return 1
                await self.reports.phase(Phase.FAILED, lifecycle.launch_failure(exc))
                return 1
            self.follower.dom = dom
            served = self._serve(vmi)
            phase, reason = await self._supervise(dom)
            await self.console.pump()
            if self.source is not None and self.source.moved.is_set():
                log.info("the guest moved to another node; this launcher is done")
                return 0
            await self.reports.phase(phase, reason)
            return 0
        finally:
            watcher.cancel()
            await asyncio.wait([watcher])
            await own.aclose()  # a watcher cancelled before it began never closed it (its subscription)
            for task in served:
                task.cancel()
            await self._clean_up()
            if lease is not None:  # kept (and fencing) until the domain is surely gone
                lease.cancel()
            if self.keeper is not None:
                await self.keeper.release()

    def _serve(self, vmi: VMI) -> list[asyncio.Task[None]]:
        """What runs beside the guest once it runs: its console (out and in), its screen, its stats, its
        keepers (power, hotplug, volume growth) and its volumes' snapshots."""
        a = self.args
        self.snapshots = SnapshotTaker(
            self.store, self.nodeapi, vmi=a.vmi, node=a.node,
            volumes=written_volumes(self.keepers.hotplug.spec or vmi.spec), volumes_dir=a.node_dir / "volumes",
            workdir=a.vmi_dir, domain=lambda: self.follower.dom)
        return [asyncio.create_task(work) for work in (
            self.console.run(),
            ConsoleInput(self.store.nc, a.node, a.vmi, CONSOLE_SOCKET, on_output=self.console.wake.set,
                         on_listening=self.console.listening).run(),
            VncServer(self.store.nc, a.node, a.vmi, VNC_SOCKET, lambda: asyncio.to_thread(
                libvirt_screenshot, self.libvirtd.conn, self.follower.dom), screen=vmi.spec.graphics).run(),
            # the stats of the current domain: libvirtd may restart
            StatsPublisher(self.store.nc, node=a.node, vmi=a.vmi, uid=a.uid, nic_names=self.nics.nic_names,
                           record=lambda: self.libvirtd.stats(self.follower.dom)).run(),
            *self.keepers.runs(), self.snapshots.run())]

    def _fence(self, why: str) -> None:
        """The lease lapsed: kill QEMU now, without asking libvirtd (it may be what hangs)."""
        self.fenced.set()
        pid = self.libvirtd.kill_qemu(self.args.vmi)
        log.error("fenced", reason=why, qemu_pid=pid)

    async def _prepare(self, vmi: VMI) -> disks.DiskPaths:
        """What a domain needs before it is defined: disks, NICs (and their DHCP), the libvirtd."""
        a = self.args
        # Disks and NICs at once (files and subprocesses beside netlink): neither needs the other.
        # Both are let finish before a failure of either is raised, so nothing still plumbs as the
        # launch is cleaned up.
        made, plumbed = await asyncio.gather(self._disks(vmi), self._network(vmi), return_exceptions=True)
        for outcome in (made, plumbed):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(made, dict)
        paths = made
        self.nics.serve()
        self.clock.mark("network")
        await self.libvirtd.start(a.pod_netns, a.vmi_dir)
        self._reaper = asyncio.create_task(reap_orphans())
        await self.libvirtd.spread()  # may probe QEMU: its orphans are reaped from here on
        self.clock.mark("libvirtd")
        self.follower.watch()
        return paths

    async def _receive(self, vmi: VMI) -> Any:
        """The target of a migration: prepared as for a boot, then the guest arrives (or not)."""
        assert self.target is not None
        self.follower.listeners.append(self.target.domain_event)
        await self.target.prepare()  # before _prepare starts reaping orphans: it runs openssl
        await self._prepare(vmi)
        dom = await self.target.receive(self.nics.interfaces, lambda: self.libvirtd.conn.lookupByName(self.args.vmi))
        self.clock.mark("domain")
        await self._lower_guest()
        log.info("the guest arrived; running it here")
        memory.settle()
        return dom

    async def _lower_guest(self) -> int | None:
        a = self.args
        qemu = await asyncio.to_thread(lower_domain, a.vmi)
        grouped = qemu is not None and a.guest_cpu_group is not None and await asyncio.to_thread(
            cpugroup.join, a.guest_cpu_group, qemu)
        log.info("guest below the control plane", nice=priority.GUEST_NICE, qemu=qemu,
                 cpu_group=str(a.guest_cpu_group) if grouped else None)
        self.clock.mark("lowered")
        return qemu

    async def _boot(self, vmi: VMI) -> Any:
        a = self.args
        paths = await self._prepare(vmi)
        kinds: list[Literal["kvm", "qemu"]] = ["kvm", "qemu"] if a.kvm else ["qemu"]
        for kind in kinds:
            plan = plan_domain(boot_spec(vmi.spec), uid=a.uid, domain_type=kind, disk_paths=paths, taps=self.nics.taps,
                               serial_log=str(a.vmi_dir / "serial.log"), macs=self.nics.macs)
            try:
                # a pause asked before the guest first runs (startStrategy: Paused) holds from the start
                dom = await self.libvirtd.define_and_start(compose_domain_xml(plan), paused=vmi.pause_requested)
                self.clock.mark("domain")
                break
            except libvirt.libvirtError as exc:
                if kind != "kvm":
                    raise
                # The node's probe said KVM works, QEMU says otherwise: emulate, like useEmulation.
                log.warning("KVM domain failed to start; falling back to TCG", error=str(exc).splitlines()[0])
                await self.libvirtd.destroy_and_undefine(a.vmi)
        qemu = await self._lower_guest()
        # its volumes' targets said with Running, not by a report of their own: one write per launch fewer
        await self.reports.phase(Phase.RUNNING, interfaces=self.nics.interfaces or None,
                                 started_at=self.started_at, ready_at=self.ready_at,
                                 volumes=self.keepers.hotplug.booted(vmi.spec, {d.name: d.target for d in plan.disks}))
        self.clock.mark("reported")
        self.clock.log(libvirtd=processes.cpu_seconds(self.libvirtd.pid) if self.libvirtd.pid else None,
                       qemu=processes.cpu_seconds(qemu) if qemu else None)
        memory.settle()
        return dom

    async def _disks(self, vmi: VMI) -> disks.DiskPaths:
        a = self.args
        spec, volumes_dir = boot_spec(vmi.spec), a.node_dir / "volumes"
        records = await volumedata.ready_here(self.store, [name for _, name in claims(spec.volumes)], a.node,
                                              volumes_dir)
        paths = await disks.prepare(spec, uid=a.uid, vmi_dir=a.vmi_dir, cache_dir=a.node_dir / "images",
                                    images=self.store.images, volumes=records, volumes_dir=volumes_dir,
                                    host_disk_dirs=a.host_disk_dirs)
        self.clock.mark("disks")
        return paths

    async def _network(self, vmi: VMI) -> None:
        await self.nics.plumb(vmi)
        self.clock.mark("nics")

    async def _supervise(self, dom: Any) -> tuple[Phase, str]:
        """Wait until the domain ends, or until asked to end it; returns the final phase and why."""
        self.follower.dom = dom
        stopped = asyncio.create_task(self.follower.follow())
        asked = asyncio.create_task(self.stop_requested.wait())
        gone = asyncio.create_task(self.gone.wait())
        term = asyncio.create_task(self.terminated.wait())
        fenced = asyncio.create_task(self.fenced.wait())
        waits = {stopped, asked, gone, term, fenced}
        if self.source is not None:
            waits.add(asyncio.create_task(self.source.moved.wait()))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        if self.fenced.is_set():  # before "stopped": the kill is what stopped it
            await self.libvirtd.destroy_and_undefine(self.args.vmi)
            return Phase.FAILED, f"fenced: {self.keeper.fenced if self.keeper else 'lease lapsed'}"
        if self.source is not None and self.source.task is not None:
            # A migration under way ends first: the domain stopped here may be running on its target.
            # Only a launcher told to end aborts it: its instance "gone" from here may be the move itself.
            if term in done:
                self.source.abort.set()
            await self.source.settle()
        if self.source is not None and self.source.moved.is_set():
            return Phase.SUCCEEDED, "migrated to another node"
        if stopped in done:
            return stopped.result()
        if asked in done:  # the grace read afresh while it waits: a later stop may cut it short
            how = await self.libvirtd.shutdown(self.follower.dom, lambda: self.grace)
            log.info("stopped on request", how=how, grace=self.grace)
            return Phase.SUCCEEDED, "stopped" if how == "shutdown" else f"stopped (destroyed after {self.grace}s grace)"
        await self.libvirtd.destroy_and_undefine(self.args.vmi)
        if gone in done:
            return self.ended or (Phase.SUCCEEDED, "instance deleted")
        return Phase.FAILED, "launcher terminated"

    async def _watch_own(self, own: AsyncGenerator[VMI | ownvmi.Gone, None], first: VMI) -> None:
        """Its own VMI as the launch read it, then its changes, heard through its node's copy: no
        consumer on the server for each launcher (launcher.ownvmi)."""
        async with contextlib.aclosing(own):
            self._heard(first)
            async for vmi in own:
                self._heard(vmi)

    def _heard(self, vmi: VMI | ownvmi.Gone) -> None:
        if self.target is not None and not self.target.arrived.is_set():
            self.target.heard(None if isinstance(vmi, ownvmi.Gone) else vmi)
            if not self.target.arrived.is_set():
                return  # the guest is not ours yet: its source acts on its instance's changes
        if self.source is not None and not isinstance(vmi, ownvmi.Gone) and vmi.uid == self.args.uid:
            self.source.heard(vmi)
        if isinstance(vmi, ownvmi.Gone) or vmi.uid != self.args.uid:
            self.keepers.stand_down()
            self.gone.set()
        elif vmi.phase in FINAL_PHASES:  # ended while it runs: no guest may outlive its end
            self.keepers.stand_down()
            self.ended = (vmi.phase, vmi.reason)
            self.gone.set()
        elif vmi.stop_requested:
            self.keepers.stand_down()
            self.grace = grace_period(vmi)
            self.stop_requested.set()
        else:
            self.keepers.want(vmi)
            if self.snapshots is not None:  # a hotplugged volume is snapshotted by this launcher too
                self.snapshots.follow(written_volumes(vmi.spec))

    def _volume_ready(self) -> None:
        if self.snapshots is not None:  # a snapshot of the volume attached may wait for it
            self.snapshots.poke()

    async def _clean_up(self) -> None:
        a = self.args
        await teardown.tear_down(self.libvirtd, self.nics, vmi=a.vmi, pod_netns=a.pod_netns, vmi_dir=a.vmi_dir)
        if self._reaper is not None:
            self._reaper.cancel()
        log.info("cleaned up")
