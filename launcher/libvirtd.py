"""The launcher's own libvirtd (as each KubeVirt virt-launcher pod has one): started inside the
pod's network namespace and the launcher's private mount namespace, reached as qemu:///system from
the launcher, stopped by the PID it wrote. Blocking libvirt calls go through threads; domain
events arrive on the asyncio loop through libvirtaio.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirtaio
import structlog

from launcher.namespaces import netns_enter_fn
from servicekit import processes

log = structlog.get_logger()
SOCKET = Path("/run/libvirt/libvirt-sock")
LOG = Path("/var/log/libvirt/libvirtd.log")

EVENTS = {libvirt.VIR_DOMAIN_EVENT_DEFINED: "DEFINED", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "UNDEFINED",
          libvirt.VIR_DOMAIN_EVENT_STARTED: "STARTED", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
          libvirt.VIR_DOMAIN_EVENT_RESUMED: "RESUMED", libvirt.VIR_DOMAIN_EVENT_STOPPED: "STOPPED",
          libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "SHUTDOWN", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "PMSUSPENDED",
          libvirt.VIR_DOMAIN_EVENT_CRASHED: "CRASHED"}
STOPPED_DETAILS = {libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "SHUTDOWN",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "DESTROYED",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "CRASHED",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "FAILED"}

_event_loop_registered = False


class LibvirtdError(RuntimeError):
    pass


class PrivateLibvirtd:
    def __init__(self) -> None:
        self.conn: Any = None
        self.pid: int | None = None

    async def start(self, netns: str, workdir: Path, wait_s: float = 30.0) -> None:
        global _event_loop_registered
        if not _event_loop_registered:  # before the first connection, once per process
            libvirtaio.virEventRegisterAsyncIOImpl(loop=asyncio.get_running_loop())
            _event_loop_registered = True
        await asyncio.to_thread(self._spawn, netns, workdir, wait_s)
        self.conn = await asyncio.to_thread(libvirt.open, "qemu:///system")

    def _spawn(self, netns: str, workdir: Path, timeout: float) -> None:
        pidfile = workdir / "libvirtd.pid"
        done = subprocess.run(["libvirtd", "-d", "-p", str(pidfile), "-f", "/etc/libvirt/libvirtd.conf"],
                              preexec_fn=netns_enter_fn(netns), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LibvirtdError(f"libvirtd did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None and pidfile.exists():
                text = pidfile.read_text().strip()
                self.pid = int(text) if text.isdigit() else None
            if SOCKET.exists() and self.pid is not None:
                log.info("libvirtd up", pid=self.pid, netns=netns)
                return
            time.sleep(0.05)
        tail = LOG.read_text(errors="replace").splitlines()[-10:] if LOG.exists() else []
        raise LibvirtdError(f"libvirtd gave no socket within {timeout:.0f}s: " + " | ".join(tail))

    def watch_lifecycle(self, callback: Callable[[str, str], None]) -> None:
        def on_event(conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
            name = EVENTS.get(event, str(event))
            callback(name, STOPPED_DETAILS.get(detail, str(detail)) if name == "STOPPED" else str(detail))

        self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)

    async def define_and_start(self, xml: str) -> Any:
        dom = await asyncio.to_thread(self.conn.defineXML, xml)
        await asyncio.to_thread(dom.create)
        return dom

    async def shutdown(self, dom: Any, grace: float) -> str:
        """ACPI power button, then destroy once the grace period is over."""
        try:
            await asyncio.to_thread(dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError:
            pass  # already off
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(_active, dom):
                return "shutdown"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(_destroy, dom)
        return "destroyed"

    async def stats(self, dom: Any) -> dict[str, object]:
        """libvirt's flat statistics record of the domain (cpu, balloon, vcpu, net, block)."""
        records = await asyncio.to_thread(self.conn.domainListGetStats, [dom], 0, 0)
        return dict(records[0][1]) if records else {}

    async def destroy_and_undefine(self, name: str) -> None:
        if self.conn is None:
            return
        try:
            dom = await asyncio.to_thread(self.conn.lookupByName, name)
        except libvirt.libvirtError:
            return
        await asyncio.to_thread(_destroy, dom)
        try:
            await asyncio.to_thread(dom.undefine)
        except libvirt.libvirtError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
            self.conn = None
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        processes.end([pid], timeout)


def _active(dom: Any) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def _destroy(dom: Any) -> None:
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
