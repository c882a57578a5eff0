"""The node agent (virt-handler): registers and heartbeats its node and keeps one launcher per
VMI bound here, serially per VMI. Launchers write their own phases; the agent reports the ones
a launcher could not (it died) and cleans up after them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path

import structlog

from handler import heartbeat, nodeinfo, nodevmis, residentfiles, vmiplan, warmmemory
from handler.clusterdns import ClusterDns
from handler.exitwatch import ExitWatch
from handler.floatingips import FloatingIPs
from handler.guestfence import GuestFence
from handler.imagecache import DEFAULT_BOUND, ImageCache
from handler.launchers import Launcher, Launchers
from handler.launchslots import LaunchSlots
from handler.nodeports import NodePorts
from handler.podnet import POD_BRIDGE, PodNetwork
from handler.portforward import NetnsDialer, PortForwardServer
from handler.probes import Prober
from handler.residentfiles import ResidentFiles
from handler.secondary import SecondaryNetworks
from handler.servicerules import ServiceRules
from handler.syncstatus import SyncStatus
from handler.vmiplan import Step
from handler.volumefiles import VolumeFiles
from handler.volumework import VolumeWork
from handler.warmmemory import WarmMemory
from proto import ipam
from proto.errors import ApiError
from proto.migrations import MigrationReport
from proto.nodeapi import EventNote, StatusReport, tidy
from proto.state import FINAL_PHASES, NODE_LEASE_RENEW_S, VMI, MigrationPhase, Node, Phase
from servicekit import cpugroup
from servicekit.cancelling import cancel_and_wait
from servicekit.informer import shared
from servicekit.nodeclient import NodeApiClient
from servicekit.restarting import keep_running
from servicekit.store import Store
from servicekit.workqueue import WorkQueue

log = structlog.get_logger()
SUPERVISE_S = 2.0  # how often the agent looks at its launchers and launch slots, whatever the bus says


class Agent:
    def __init__(self, store: Store, node: Node, launchers: Launchers, podnet: PodNetwork, nodeapi: NodeApiClient,
                 *, clock: Callable[[], float] = time.time, management: IPv4Network | None = None,
                 image_cache_bound: int = DEFAULT_BOUND, ovs_db: str | None = None,
                 parallel_launches: int | None = None, guests_cpu_group: Path | None = None,
                 resident_files: ResidentFiles | None = None, warm_memory: WarmMemory | None = None) -> None:
        """parallel_launches: instances starting at once here (default: one per core of the machine and
        one more: with the guests yielding, the extra launch uses the CPU in the others' hand-offs);
        the rest wait their turn, oldest first (handler.launchslots). guests_cpu_group: the node's
        guests' CPU group, which yields to launches while there are any (servicekit.cpugroup).
        resident_files: keeps what each launch ran in memory (handler.residentfiles); None: nothing is.
        warm_memory: memory the host backs, handed to each launch as it begins and refilled once
        none is under way (handler.warmmemory); None: none is kept."""
        self.store = store
        self.podnet = podnet
        self.nodeapi = nodeapi
        self.fence = GuestFence(store, podnet.netns, POD_BRIDGE, podnet.cidr, management)
        self.nodeports = NodePorts(store, node.name, podnet.netns)
        self.service_rules = ServiceRules(store, podnet.netns)
        self.cluster_dns = ClusterDns(store, podnet.netns, podnet.netlink)
        allowed = frozenset(node.allowed_bridges)
        # one netlink adapter for the node's namespace: a test's fake stands in for all of it
        self.secondary = SecondaryNetworks(podnet.netns, allowed, podnet.netlink, ovs_db)
        self.floating_ips = FloatingIPs(store, node.name, podnet.netns, allowed, podnet.netlink)
        self.port_forward = PortForwardServer(store.nc, node.name, lambda: nodevmis.vmis_here(store, node.name),
                                              NetnsDialer(podnet.netns))
        self.node = node
        self.launchers = launchers
        self.volume_files = VolumeFiles(store, node.name, launchers.paths.state_dir / "volumes")
        self.volume_work = VolumeWork(store, nodeapi, node.name, launchers.paths.state_dir / "volumes")
        self.image_cache = ImageCache(store, node.name, launchers.paths.state_dir, image_cache_bound)
        self.sync_status = SyncStatus(nodeapi, node.name)
        self.probes = Prober(lambda: nodevmis.vmis_here(store, node.name), NetnsDialer(podnet.netns), nodeapi,
                             node.name)
        self.clock = clock
        self.queue = WorkQueue(self.reconcile, bind=("vm", "vmi"))
        self.slots = LaunchSlots(parallel_launches or default_launch_slots())
        self.guests = guests_cpu_group
        self._guests_yield = False
        self.resident_files = resident_files
        self.warm_memory = warm_memory
        self._refilling: asyncio.Future[tuple[int, float]] | None = None
        # its own thread: a refill is long and at idle priority, and must hold up none of the loop's work
        self._warm_thread = ThreadPoolExecutor(1, thread_name_prefix="warm-memory")
        self.exits = ExitWatch(self.queue.kick)  # a launcher's end reconciled at once, not at the next look
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Fail closed: no launcher is spawned (nor a guest let on the pod bridge) before the fence
        # stands; if nft refuses it, this raises and the handler does not start.
        await self.fence.sync()
        await self.heartbeat()
        for launcher in await asyncio.to_thread(self.launchers.adopt_all):
            self.exits.watch(launcher.vmi, launcher)
        parts = {"guest fence": self.fence.run, "heartbeats": self._heartbeats, "instance watch": self._watch,
                 "supervision": self._supervise, "node watch": self._watch_nodes, "node ports": self.nodeports.run,
                 "service rules": self.service_rules.run, "cluster dns": self.cluster_dns.run,
                 "floating ips": self.floating_ips.run, "volume files": self.volume_files.run,
                 "image cache": self.image_cache.run, "volume work": self.volume_work.run,
                 "port forward": self.port_forward.run, "probes": self.probes.run}
        # a part that fails is said and started again: never a node running on without it, unseen
        self._tasks = [asyncio.create_task(keep_running(name, run)) for name, run in parts.items()]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self.exits.close()
        await self.queue.close()
        self.slots.clear()
        if self.warm_memory is not None:
            self.warm_memory.release()  # before the refill's thread is waited for: it stops at its next step
            await asyncio.to_thread(self._warm_thread.shutdown)
        self._weigh_guests()  # a stopped handler launches nothing: the guests get their weight back

    def _weigh_guests(self) -> None:
        """The node's guests yield the CPU while it launches (servicekit.cpugroup); a write only when
        that changes."""
        launching = self.slots.busy
        if self.guests is None or launching == self._guests_yield:
            return
        if cpugroup.yield_to_launches(self.guests, launching):
            self._guests_yield = launching
            log.info("guests yield to launches" if launching else "guests weigh as before", group=str(self.guests))

    def _keep_launch_files(self, launcher_pid: int) -> None:
        """What a launch that has just reached Running, the last of its burst, ran kept in memory for
        the next ones: its launcher's pages, then those of the newest of the node's launchers,
        libvirtds (the launches' CPU group) and QEMUs (the guests')."""
        assert self.resident_files is not None
        groups = (self.launchers.cpu_groups.get(cpugroup.GUESTS), self.launchers.cpu_groups.get(cpugroup.LAUNCHES))
        self.resident_files.learn(
            residentfiles.look_order(launcher_pid, [cpugroup.members(g) for g in groups if g is not None]))

    async def heartbeat(self) -> None:
        # what emptyDisks may still take here, for the scheduler's filter. On the loop (a statvfs of a
        # local directory): through the loop's thread pool, the renewal waited behind whatever held
        # its threads, and a node that misses three renewals is judged lost (scheduler.nodelife).
        free = nodeinfo.free_disk(self.launchers.paths.state_dir)
        await heartbeat.beat(self.store, self.node, free, self.clock())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(NODE_LEASE_RENEW_S)
            try:
                await self.heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    async def _watch(self) -> None:
        """This node's VMIs only (the leader's copies, scheduler.nodevmis): a copy's coming, change or
        going brings a reconcile, which reads the VMI itself. A launcher adopted here whose VMI has no
        copy any more (deleted or moved while the handler was away) is looked at once at the start."""
        for name in list(self.launchers.running):
            self.queue.kick(name)
        async for change in nodevmis.informer(self.store, self.node.name).changes():
            name = nodevmis.vmi_name(change.key)
            self.queue.kick(name)
            if change.value is None:
                self.volume_files.kick()  # a deleted volume it held may be free now

    async def _watch_nodes(self) -> None:
        """Keep routes to the other nodes' pods as nodes come and go."""
        nodes: dict[str, Node] = {}
        async for change in shared(self.store, self.store.nodes).changes():  # one watch with the fence's
            if change.value is None:
                nodes.pop(change.key, None)
            else:
                nodes[change.key] = change.value
            # Heartbeats make most changes; sync_routes touches the kernel only for a real difference.
            others = await self.podnet.claimed([n for n in nodes.values() if n.name != self.node.name])
            await asyncio.to_thread(self.podnet.sync_routes, others)

    async def _supervise(self) -> None:
        """Notice launchers that exited, whatever the bus says."""
        while True:
            await asyncio.sleep(SUPERVISE_S)
            self.launchers.reap_warming()
            for name, launcher in list(self.launchers.running.items()):
                if not launcher.alive():
                    self.queue.kick(name)
            for name in self.slots.expire(self.clock()):  # a slow launch no longer holds up the line
                self.queue.kick(name)
            self._weigh_guests()
            await self.keep_memory_warm()

    async def keep_memory_warm(self) -> None:
        """Memory given back under pressure, else refilled while no launch is under way."""
        warm = self.warm_memory
        if warm is None:
            return
        await asyncio.to_thread(warm.relieve)
        if self.slots.busy or (self._refilling is not None and not self._refilling.done()) \
                or warm.held >= warm.size or not await asyncio.to_thread(warm.wants_more):
            return

        def refill() -> tuple[int, float]:
            cpu = time.thread_time()
            with warmmemory.idle_priority():
                return warm.refill(lambda: not self.slots.busy), time.thread_time() - cpu

        self._refilling = asyncio.get_running_loop().run_in_executor(self._warm_thread, refill)
        self._refilling.add_done_callback(lambda done: _said_refill(done, warm))

    async def reconcile(self, name: str) -> None:
        try:
            await self._reconcile(name)
        finally:
            self._weigh_guests()  # a slot taken or given up

    async def _reconcile(self, name: str) -> None:
        entry = await self.store.vmis.get(name)
        vmi = entry.value if entry else None
        launcher = self.launchers.running.get(name)
        if self.slots.knows(name) and launch_over(vmi, launcher, self.node.name):
            for turn in self.slots.release(name):
                self.queue.kick(turn)
            if self.resident_files is not None and launcher is not None and vmi is not None \
                    and vmi.phase is Phase.RUNNING and not self.slots.busy:  # a burst's end, not its middle
                await asyncio.to_thread(self._keep_launch_files, launcher.pid)
        seen = None if launcher is None else vmiplan.Seen(
            uid=launcher.uid, alive=launcher.alive(), lost_the_race=launcher.lost_the_race(),
            exit_code=launcher.returncode())
        try:
            for act in vmiplan.plan(vmi, seen, self.node.name):
                if not await self._carry_out(act, name, vmi, launcher):
                    return
        except Exception as exc:
            await self.sync_status.failed(vmi, exc)
            raise  # the work queue retries, backing off
        await self.sync_status.succeeded(vmi)

    async def _carry_out(self, act: vmiplan.Act, name: str, vmi: VMI | None, launcher: Launcher | None) -> bool:
        """One step of the plan; False when the rest of it no longer applies (the queue comes back)."""
        match act.step:
            case Step.KILL_GUEST:
                killed = await asyncio.to_thread(self.launchers.kill_guest, name)
                log.warning("killing the guest here", vmi=name, why=act.why, qemu=killed)
            case Step.END_LAUNCHER if launcher is not None:
                log.info("ending its launcher", vmi=name, why=act.why)
                await self.launchers.terminate(launcher, act.grace)
            case Step.FORGET:
                await self._forget(name)
            case Step.RELEASE_ADDRESS:
                if await self.store.vms.get(name) is None:
                    await self.podnet.release(name)  # the address belongs to the VM, not to a run
            case Step.ADOPT:
                self.launchers.forget(name)
                adopted = await asyncio.to_thread(self.launchers.adopt, name)
                if adopted is None:
                    self.queue.kick(name)  # nobody to adopt after all: plan again without it
                else:
                    self.exits.watch(name, adopted)
                return False
            case Step.SPAWN if vmi is not None:
                if not self.slots.take(name, vmi.created_at, self.clock()):
                    log.info("waiting for a launch slot", vmi=name, waiting=self.slots.waiting)
                    return False  # kicked again when its turn comes
                if self.warm_memory is not None:  # the launch's processes take pages the host still backs
                    await asyncio.to_thread(self.warm_memory.launch_begins)
                await self._spawn(vmi)
            case Step.REPORT_END if vmi is not None and act.phase is not None:
                if act.phase is Phase.FAILED:
                    log.warning("reporting the end its launcher could not", vmi=name, reason=act.why)
                await self._report_end(vmi, act.phase, act.why, torn_down=act.torn_down)
            case Step.REPORT_TORN_DOWN if vmi is not None:
                await self._report_torn_down(vmi)
            case Step.SPAWN_TARGET if vmi is not None and vmi.migration_state is not None:
                log.info("starting the launcher a migration moves the instance to", vmi=name,
                         source=vmi.node_name, migration=vmi.migration_state.migration_name)
                await self._spawn(vmi, migration=vmi.migration_state.migration_uid)
            case Step.REPORT_MIGRATION_FAILED if vmi is not None and vmi.migration_state is not None:
                log.warning("the migration here failed", vmi=name, reason=act.why)
                await self._migration_failed(vmi, act.why)
        return True

    async def _migration_failed(self, vmi: VMI, reason: str) -> None:
        assert vmi.migration_state is not None
        report = MigrationReport(vmi=vmi.name, uid=vmi.uid, migration_uid=vmi.migration_state.migration_uid,
                                 phase=MigrationPhase.FAILED, reason=tidy(reason))
        try:
            await self.nodeapi.migration(report)
        except ApiError as exc:
            if exc.retryable:
                raise  # the work queue tries again
            log.info("migration gone or over; not reported", vmi=vmi.name, error=exc.message)

    async def _spawn(self, vmi: VMI, migration: str | None = None) -> None:
        """migration: the uid of the live migration whose target this launcher is."""
        name = vmi.name
        pod_ip, gateway = None, None
        if any(n.kind == "pod" for n in vmi.spec.networks) and self.podnet.cidr is not None:
            ip = await self.podnet.pod_ip(name)
            await asyncio.to_thread(self.podnet.forget_neighbor, ip)
            pod_ip, gateway = f"{ip}/{self.podnet.cidr.prefixlen}", str(ipam.gateway(self.podnet.cidr))
        extra = []
        try:
            # only secondary (multus) networks have anything to attach: no round trip through a busy
            # control plane for the rest, on the way to every launch
            attachments = await self.nodeapi.attach(name, vmi.uid) \
                if any(n.kind == "multus" for n in vmi.spec.networks) else []
        except ApiError as exc:  # e.g. no address left: the instance cannot run, say why
            log.warning("cannot attach networks", vmi=name, reason=exc.message)
            await self._cannot_run(vmi, exc.message, migration)
            return
        for nic in attachments:
            if nic.type == "ovs":  # the node's OVS bridge, as it is now (ovs-cni makes none either)
                why = await asyncio.to_thread(self.secondary.missing_ovs_bridge, nic.network, nic.bridge)
                if why is not None:
                    log.warning("cannot attach networks", vmi=name, reason=why)
                    await self._cannot_run(vmi, why, migration)
                    return
            else:
                await asyncio.to_thread(self.secondary.ensure_bridge, nic.bridge)
            extra.append(f"{nic.interface}={nic.bridge}={nic.address}={nic.type}={nic.vlan or ''}")
        self.exits.watch(name, await asyncio.to_thread(self.launchers.spawn, name, vmi.uid, pod_ip, gateway, extra,
                                                       migration))

    async def _cannot_run(self, vmi: VMI, reason: str, migration: str | None) -> None:
        """The instance cannot run here: it failed, or, migrating here, its migration did (it runs on)."""
        if migration is None:
            await self._fail(vmi, reason)
        else:
            await self._migration_failed(vmi, f"the target: {reason}")

    async def _fail(self, vmi: VMI, reason: str) -> None:
        """Report what the launcher could not: its instance failed, and why."""
        await self._report_end(vmi, Phase.FAILED, reason)

    async def _report_end(self, vmi: VMI, phase: Phase, reason: str, *, torn_down: bool = False) -> None:
        """torn_down: nothing of the run is left here (said only after _forget)."""
        reason = tidy(reason)
        failed = phase is Phase.FAILED
        await self._report(StatusReport(
            vmi=vmi.name, uid=vmi.uid, phase=phase, reason=reason, torn_down=torn_down,
            event=EventNote(reason="Failed" if failed else "Stopped", message=reason, warning=failed)))

    async def _report_torn_down(self, vmi: VMI) -> None:
        """The instance ended and its launcher, pod and files are gone: its record may go (the
        control plane waits for this, as a KubeVirt VMI's finalizer holds its deletion)."""
        await self._report(StatusReport(vmi=vmi.name, uid=vmi.uid, torn_down=True))

    async def _report(self, report: StatusReport) -> None:
        try:
            await self.nodeapi.report(report, patience=60.0)
        except ApiError as exc:
            if exc.retryable:
                raise  # the work queue tries again
            log.info("instance gone or no longer ours; not reported", vmi=report.vmi, error=exc.message)

    async def _forget(self, name: str) -> None:
        self.launchers.forget(name)
        await asyncio.to_thread(self.launchers.clean_up, name)


def default_launch_slots(cores: int | None = None) -> int:
    """One launch per core and one more. Each launch hands off between its launcher, libvirtd and
    QEMU, and while a node launches its guests take only what is left (servicekit.cpugroup), so with
    one per core the cores sat idle in those gaps. 100-VMI lane on 2 cores, P50/P95 creation->Running:
    2 slots 2.91-3.74 / 7.80-9.59 s (five runs), 3 slots 2.30-2.78 / 7.01-8.00 s (three), 4 slots
    2.78-3.58 / 7.34-8.73 s (two)."""
    return (cores if cores is not None else os.cpu_count() or 1) + 1


def launch_over(vmi: VMI | None, launcher: Launcher | None, node: str) -> bool:
    """An instance no longer starting here: it runs or ended, went, moved, or its launcher exited."""
    return (vmi is None or vmi.node_name != node or vmi.phase is Phase.RUNNING or vmi.phase in FINAL_PHASES
            or (launcher is not None and not launcher.alive()))


def _said_refill(done: asyncio.Future[tuple[int, float]], warm: WarmMemory) -> None:
    if done.cancelled():
        return
    if (exc := done.exception()) is not None:
        log.warning("warm memory not refilled", error=str(exc), held=warm.held)
    else:
        added, cpu = done.result()
        log.info("warm memory refilled", added=added, held=warm.held, cpu_s=round(cpu, 3))
