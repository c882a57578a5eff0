"""The launcher's own libvirtd (as each KubeVirt virt-launcher pod has one): started inside the
pod's network namespace and the launcher's private mount namespace, reached as qemu:///system from
the launcher, stopped by the PID it wrote. Blocking libvirt calls go through threads; domain
events arrive on the asyncio loop through libvirtaio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirtaio
import structlog

from launcher import capscache, priority
from launcher.libvirtdstart import dated_as_newest, libvirtd_path, qemu_only_drivers, spawn, widen
from launcher.lifecycle import CONNECTION_CLOSED
from servicekit import cpugroup, processes

log = structlog.get_logger()
SOCKET = Path("/run/libvirt/libvirt-sock")
LOG = Path("/var/log/libvirt/libvirtd.log")
QEMU_RUN = Path("/run/libvirt/qemu")  # <domain>.pid and its status XML, in the private tmpfs
# glibc gives each thread that allocates an arena of its own (up to 8 per core): most of what an idle
# libvirtd held privately was half-used arenas of its worker threads. One arena for all: its one
# client makes one call at a time, so they never contend (an idle one held 6.5 -> 5.2 MiB privately).
MALLOC_ARENAS = "1"
# What proto.stats reads of a sample (KubeVirt's VMI metrics), not every group libvirt has: one sample of
# the seed VM cost QEMU 5.3-5.8, libvirtd 2.1-2.5 and the launcher 1.1-1.2 ms of CPU with every group (the
# state, perf, iothread, memory-bandwidth, dirty-rate and QEMU's query-stats ones among them), 2.9-3.1,
# 1.3-1.8 and 1.0-1.4 ms with these. A scrape of a node samples each of its VMs.
STATS_GROUPS = (libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE
                | libvirt.VIR_DOMAIN_STATS_BLOCK)

EVENTS = {libvirt.VIR_DOMAIN_EVENT_DEFINED: "DEFINED", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "UNDEFINED",
          libvirt.VIR_DOMAIN_EVENT_STARTED: "STARTED", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
          libvirt.VIR_DOMAIN_EVENT_RESUMED: "RESUMED", libvirt.VIR_DOMAIN_EVENT_STOPPED: "STOPPED",
          libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "SHUTDOWN", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "PMSUSPENDED",
          libvirt.VIR_DOMAIN_EVENT_CRASHED: "CRASHED"}
STOPPED_DETAILS = {libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "SHUTDOWN",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "DESTROYED",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "CRASHED",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "FAILED",
                 libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "MIGRATED"}
SUSPENDED_DETAILS = {libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: "PAUSED",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: "MIGRATED",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: "IOERROR",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG: "WATCHDOG",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR: "API_ERROR",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: "POSTCOPY",
                     libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED: "POSTCOPY_FAILED"}
CRASHED_DETAILS = {libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED: "PANICKED"}
RESUMED_DETAILS = {libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED: "UNPAUSED",
                   libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED: "MIGRATED",  # a migrated-in guest runs here now
                   libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY: "POSTCOPY"}
DETAILS = {"STOPPED": STOPPED_DETAILS, "SUSPENDED": SUSPENDED_DETAILS, "CRASHED": CRASHED_DETAILS,
           "RESUMED": RESUMED_DETAILS}
CLOSE_REASONS = {libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "ERROR", libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "EOF",
                 libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "KEEPALIVE",
                 libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "CLIENT"}

_event_loop_registered = False


class LibvirtdError(RuntimeError):
    pass


class PrivateLibvirtd:
    def __init__(self, huge_pages: bool = True, launch_group: Path | None = None) -> None:
        """huge_pages False: libvirtd and the QEMU it starts (prctl's setting is inherited) get no
        transparent huge pages. QEMU asks for them for guest RAM, the TCG translation cache and every
        RAM region (ACPI tables, VGA memory): a 2 MiB page for each region touched at all. Under TCG
        an idle test guest's QEMU held 5 MiB less private memory without, and booted on less CPU (a
        bare QEMU to the guest's prompt: 1.17-1.34 CPU-s against 1.47-2.33 with them, 2026-12-04: on
        a box whose host takes back free 2 MiB blocks, every huge page is faulted in anew there,
        bench/hostmemory.py --huge); a KVM guest keeps them (its memory is what the hardware walks)."""
        self.conn: Any = None
        self.pid: int | None = None
        self.huge_pages = huge_pages
        self.launch_group = launch_group  # the node's launches' CPU group: a QEMU ends in it (raise_domain)
        self._spawning: asyncio.Future[None] | None = None

    def begin(self, netns: str | None, workdir: Path, wait_s: float = 30.0) -> None:
        """Start libvirtd now, in a thread, while the launcher goes on (reads its instance, makes its
        disks and NICs: libvirtd needs none of them until the domain is defined); ``start`` then
        connects. Its driver's start (~40 ms, longer on a busy node) no longer waits in line."""
        if self._spawning is None:
            self._spawning = asyncio.ensure_future(asyncio.to_thread(self._spawn, netns, workdir, wait_s))

    async def start(self, netns: str | None, workdir: Path, wait_s: float = 30.0) -> None:
        global _event_loop_registered
        if not _event_loop_registered:  # before the first connection, once per process
            libvirtaio.virEventRegisterAsyncIOImpl(loop=asyncio.get_running_loop())
            _event_loop_registered = True
        self.begin(netns, workdir, wait_s)
        assert self._spawning is not None
        try:
            await asyncio.shield(self._spawning)  # cancelled, the spawn still ends; settle() waits for it
        finally:
            if self._spawning.done():
                self._spawning = None
        self.conn = await asyncio.to_thread(libvirt.open, "qemu:///system")

    async def spread(self) -> None:
        """QEMU's capabilities looked up while libvirtd is still on the one CPU it started on (libvirt
        checks its cache of them against that CPU's CPUID, launcher.libvirtdstart.spawn), then every
        CPU the launcher may use is its again, and its guest's. Only once the launcher reaps orphans
        (launcher.reaper): a lookup that finds the cache outdated probes QEMU, and libvirt waits for
        each probe's QEMU to be gone (unreaped, the launch waited ~160 s)."""
        if self.pid is not None and self.conn is not None:
            await asyncio.to_thread(self.conn.getVersion)
            widen(self.pid, os.sched_getaffinity(0))

    async def settle(self) -> None:
        """A start begun and not finished (the launch ended early or was cancelled), waited for, so
        that stop() finds libvirtd's pid; its failure is no news here (the launch has said it)."""
        spawning, self._spawning = self._spawning, None
        if spawning is not None:
            with contextlib.suppress(Exception):
                await spawning

    def _spawn(self, netns: str | None, workdir: Path, timeout: float) -> None:
        pidfile = workdir / "libvirtd.pid"
        env = dict(os.environ)
        drivers = qemu_only_drivers(workdir / "libvirt-drivers")
        if drivers is not None:
            env["LIBVIRT_DRIVER_DIR"] = str(drivers)
        env["MALLOC_ARENA_MAX"] = MALLOC_ARENAS
        if trimmed := capscache.trim():
            log.info("QEMU capabilities cache trimmed", files=[p.name for p in trimmed])
        binary = libvirtd_path()
        done = spawn([dated_as_newest(workdir, binary), "-d", "-p", str(pidfile), "-f", "/etc/libvirt/libvirtd.conf"],
                     netns=netns, huge_pages=self.huge_pages, env=env, executable=binary,
                     cpu=min(os.sched_getaffinity(0)))
        if done.returncode != 0:
            raise LibvirtdError(f"libvirtd did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None and pidfile.exists():
                text = pidfile.read_text().strip()
                self.pid = int(text) if text.isdigit() else None
            if SOCKET.exists() and self.pid is not None:
                # it inherited the launcher's thread nice, but daemonizing made it a session (a group) of its own
                priority.lower_group(self.pid, priority.LAUNCHER_NICE)
                log.info("libvirtd up", pid=self.pid, netns=netns)
                return
            time.sleep(0.05)
        tail = LOG.read_text(errors="replace").splitlines()[-10:] if LOG.exists() else []
        raise LibvirtdError(f"libvirtd gave no socket within {timeout:.0f}s: " + " | ".join(tail))

    def watch_lifecycle(self, callback: Callable[[str, str], None]) -> None:
        """Domain lifecycle events as (event, detail) names, and the loss of this connection as
        (lifecycle.CONNECTION_CLOSED, reason): libvirtd gives no event when it dies, the socket's
        end is how we learn it (libvirtaio watches it on our loop)."""
        def on_event(conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
            name = EVENTS.get(event, str(event))
            callback(name, DETAILS.get(name, {}).get(detail, str(detail)))

        def on_close(conn: Any, reason: int, opaque: Any) -> None:
            callback(CONNECTION_CLOSED, CLOSE_REASONS.get(reason, str(reason)))

        self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
        self.conn.registerCloseCallback(on_close, None)

    async def restart(self, netns: str, workdir: Path) -> None:
        """A new libvirtd after the last one died (its QEMU runs on); libvirtd reattaches running
        domains from their status in /run/libvirt, which our private tmpfs kept."""
        self._drop_connection()
        self.pid = None
        # the dead one's: a stale socket or pidfile would pass for the new one's
        SOCKET.unlink(missing_ok=True)
        (workdir / "libvirtd.pid").unlink(missing_ok=True)
        await self.start(netns, workdir)
        await self.spread()  # the launcher reaps orphans by now: it restarts a libvirtd its guest outlived

    async def lookup(self, name: str) -> tuple[Any, bool]:
        """The domain by name on the current connection, and whether it runs."""
        dom = await asyncio.to_thread(self.conn.lookupByName, name)
        return dom, await asyncio.to_thread(_active, dom)

    def kill_qemu(self, name: str) -> int | None:
        """SIGKILL the domain's QEMU by the pidfile libvirt wrote, for when no libvirtd is left to
        destroy it; returns its pid."""
        pid = domain_qemu(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def _drop_connection(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.unregisterCloseCallback()  # our own close is no loss of libvirtd
        except libvirt.libvirtError:
            pass
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass
        self.conn = None

    async def define_and_start(self, xml: str, paused: bool = False) -> Any:
        """paused: QEMU is built and its guest never runs until resumed (libvirt's START_PAUSED)."""
        dom = await asyncio.to_thread(self.conn.defineXML, xml)
        await asyncio.to_thread(dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        return dom

    async def shutdown(self, dom: Any, grace: Callable[[], float]) -> str:
        """ACPI power button, then destroy once the grace period (asked again at every look: a later
        stop may shorten it) is over; a grace of 0 destroys at once, without the button (virtctl stop
        --force --grace-period 0). A paused guest (virtbus pause) would not hear the button: it is
        resumed first."""
        start = time.monotonic()
        if grace() <= 0:
            await self._end(dom)
            return "destroyed"
        try:
            if await self.is_paused(dom):
                await asyncio.to_thread(dom.resume)
        except libvirt.libvirtError:
            pass  # gone, or not paused after all: the button or the destroy below settles it
        try:
            await asyncio.to_thread(dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError:
            pass  # already off
        while time.monotonic() < start + grace():
            if not await asyncio.to_thread(_active, dom):
                return "shutdown"
            await asyncio.sleep(0.2)
        await self._end(dom)
        return "destroyed"

    async def is_paused(self, dom: Any) -> bool:
        """Paused, not counting the moment QEMU stops in a guest's shutdown (a soft reboot's
        included): that pause is libvirt's way through, not the guest's state."""
        state, reason = await asyncio.to_thread(dom.state)
        return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason != libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN)

    async def suspend(self, dom: Any) -> None:
        await asyncio.to_thread(dom.suspend)

    async def resume(self, dom: Any) -> None:
        await asyncio.to_thread(dom.resume)

    async def reboot(self, dom: Any) -> None:
        """The ACPI power button, with libvirt resetting the guest when it powers off (libvirt's
        "fake reboot") instead of ending QEMU: the same domain and QEMU, the guest booted afresh."""
        await asyncio.to_thread(dom.reboot, libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)

    async def stats(self, dom: Any) -> dict[str, object]:
        """libvirt's flat statistics record of the domain (cpu, balloon, vcpu, net, block)."""
        records = await asyncio.to_thread(self.conn.domainListGetStats, [dom], STATS_GROUPS, 0)
        return dict(records[0][1]) if records else {}

    async def destroy_and_undefine(self, name: str) -> None:
        if self.conn is None:
            return
        try:
            dom = await asyncio.to_thread(self.conn.lookupByName, name)
        except libvirt.libvirtError:
            return
        await self._end(dom)
        try:
            await asyncio.to_thread(dom.undefine)
        except libvirt.libvirtError:
            pass

    async def _end(self, dom: Any) -> None:
        """Destroy the domain, its QEMU raised first so that its end is not queued behind the guests."""
        def end() -> None:
            with contextlib.suppress(libvirt.libvirtError):  # gone already: nothing to end
                if dom.isActive():
                    raise_domain(dom.name(), self.launch_group)
                    dom.destroy()
        await asyncio.to_thread(end)

    def stop(self, timeout: float = 10.0) -> None:
        self._drop_connection()
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        processes.end([pid], timeout)


def _active(dom: Any) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def is_qemu_of(pid: int, name: str) -> bool:
    """Whether ``pid`` is a QEMU libvirt started for the domain ``name`` (``-name guest=NAME,...``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    words = {w for arg in argv for w in arg.split(",")}
    return bool(argv) and "qemu" in Path(argv[0]).name and f"guest={name}" in words


def domain_qemu(name: str) -> int | None:
    """The domain's QEMU, by the pidfile its libvirtd wrote; None if there is none (a pid is reused:
    only a QEMU of this domain counts)."""
    try:
        text = (QEMU_RUN / f"{name}.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not is_qemu_of(int(text), name):
        return None
    return int(text)


def lower_domain(name: str, nice: int = priority.GUEST_NICE) -> int | None:
    """The domain's QEMU lowered below launches; its pid, None if not found."""
    pid = domain_qemu(name)
    if pid is not None:
        priority.lower_process(pid, nice)
    return pid


def raise_domain(name: str, group: Path | None, nice: int = priority.LAUNCHER_NICE) -> int | None:
    """The domain's QEMU, about to be ended, back at a launch's weight: in the launches' CPU group
    (``group``, where there is one) and at the launcher's nice. Why: its exiting threads must run for
    the launcher (its subreaper) to reap it, and the reap (the kernel dropping the process's /proc
    entries) spins until they are done. Left among the node's guests, a group of low weight where
    each busy guest takes its turn, an exiting thread waited its turn while its reaper spun: the 100
    VMIs of bench/lane.py deleted as they booted, the launchers' reaps took 0.5-2.5 s in all (one
    0.97 s), 0.15-0.55 s raised first. Returns its pid, None if not found."""
    pid = domain_qemu(name)
    if pid is not None:
        if group is not None:
            cpugroup.join(group, pid)
        priority.raise_process(pid, nice)
    return pid
