"""Driver for test_private_libvirtd, run as its own process (``python -m
tests.integration.private_libvirtd_driver``): unshare(CLONE_NEWNS) must happen before any thread
exists and must not touch the pytest process.

It enters a private mount namespace, starts a private libvirtd in the given (test-made) network
namespace, boots a disk-less domain (SeaBIOS finds nothing to boot and waits: enough for start,
events and destroy), then, given --disk, the test guest on a qcow2 overlay until its serial marker,
and ACPI-shuts it down. Everything it learns goes to --report as JSON, written as it goes, so the
test can clean up by PID even if this process dies half-way.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt

from launcher import namespaces
from launcher.domain import DiskPlan, DomainPlan, NicPlan, compose_domain_xml
from launcher.libvirtd import PrivateLibvirtd

PR_SET_CHILD_SUBREAPER = 36
MARKER = b"VIRTBUS-GUEST-READY"


class Report:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"qemu_pids": [], "events": [], "errors": []}

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _plan(name: str, workdir: Path, disks: tuple[DiskPlan, ...]) -> DomainPlan:
    return DomainPlan(name=name, uuid=str(uuid.uuid4()), domain_type="qemu", memory_bytes=64 * 2**20,
                      sockets=1, cores=1, threads=1, disks=disks,
                      nics=(NicPlan(name="default", tap="tap0", mac="02:00:00:00:00:01", model="virtio"),),
                      serial_log=str(workdir / f"{name}.serial.log"))


async def _until(what: str, check: Any, timeout: float) -> float:
    """Poll check() until true; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no {what} within {timeout:.0f}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


class Run:
    def __init__(self, netns: str, workdir: Path, prefix: str, report: Report) -> None:
        self.netns, self.workdir, self.prefix, self.report = netns, workdir, prefix, report
        self.lv = PrivateLibvirtd()
        self.events: list[tuple[str, str]] = []

    def on_event(self, event: str, detail: str) -> None:
        self.events.append((event, detail))
        self.report.data["events"].append([event, detail])
        self.report.flush()

    def seen(self, event: str, detail: str | None = None) -> bool:
        return any(e == event and (detail is None or d == detail) for e, d in self.events)

    async def boot(self, plan: DomainPlan) -> Any:
        self.events.clear()
        dom = await self.lv.define_and_start(compose_domain_xml(plan))
        pid = int(Path(f"/run/libvirt/qemu/{plan.name}.pid").read_text().strip())
        self.report.data["qemu_pids"].append(pid)
        self.report["qemu_in_netns"] = _ns_inode(pid, "net") == os.stat(f"/run/netns/{self.netns}").st_ino
        return dom

    async def gone(self, name: str) -> bool:
        await self.lv.destroy_and_undefine(name)
        try:
            await asyncio.to_thread(self.lv.conn.lookupByName, name)
        except libvirt.libvirtError:
            return True
        return False

    async def empty_domain(self) -> None:
        plan = _plan(f"{self.prefix}-empty", self.workdir, ())
        dom = await self.boot(plan)
        self.report["empty_started_event_s"] = await _until("STARTED event", lambda: self.seen("STARTED"), 10)
        self.report["empty_shutdown"] = await self.lv.shutdown(dom, 2.0)  # nothing answers the button
        await _until("STOPPED event", lambda: self.seen("STOPPED"), 10)
        self.report["empty_gone"] = await self.gone(plan.name)

    async def guest(self, disk: Path) -> None:
        overlay = self.workdir / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(overlay)],
                       check=True, capture_output=True)
        plan = _plan(f"{self.prefix}-guest", self.workdir, (
            DiskPlan(name="containerdisk", path=str(overlay), format="qcow2", bus="virtio", target="vda",
                     readonly=False, boot_order=1),))
        serial = Path(plan.serial_log)
        start = time.monotonic()
        dom = await self.boot(plan)
        self.report["guest_define_start_s"] = time.monotonic() - start
        await _until("guest marker", lambda: serial.exists() and MARKER in serial.read_bytes(), 60)
        self.report["guest_marker_s"] = time.monotonic() - start
        start = time.monotonic()
        self.report["guest_shutdown"] = await self.lv.shutdown(dom, 30.0)
        self.report["guest_shutdown_s"] = time.monotonic() - start
        await _until("STOPPED event", lambda: self.seen("STOPPED"), 10)
        self.report["guest_gone"] = await self.gone(plan.name)

    async def main(self, disk: Path | None) -> None:
        start = time.monotonic()
        await self.lv.start(self.netns, self.workdir)
        assert self.lv.pid is not None
        self.report["libvirtd_pid"] = self.lv.pid
        self.report["libvirtd_start_s"] = time.monotonic() - start
        self.report["libvirtd_in_netns"] = (
            _ns_inode(self.lv.pid, "net") == os.stat(f"/run/netns/{self.netns}").st_ino)
        self.report["libvirtd_in_our_mounts"] = _ns_inode(self.lv.pid, "mnt") == _ns_inode("self", "mnt")
        self.lv.watch_lifecycle(self.on_event)
        try:
            await self.empty_domain()
            if disk is not None:
                await self.guest(disk)
        finally:
            for name in (f"{self.prefix}-empty", f"{self.prefix}-guest"):
                try:
                    await self.lv.destroy_and_undefine(name)
                except Exception as exc:  # keep cleaning up
                    self.report.data["errors"].append(f"undefine {name}: {exc}")
            start = time.monotonic()
            await asyncio.to_thread(self.lv.stop)
            self.report["libvirtd_stop_s"] = time.monotonic() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--netns", required=True)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--prefix", required=True, help="domain names start with it")
    p.add_argument("--report", required=True, type=Path)
    p.add_argument("--disk", type=Path, default=None)
    args = p.parse_args()
    report = Report(args.report)
    # libvirtd daemonizes and QEMU double-forks: as subreaper we are their parent and reap them.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    namespaces.create_tap(args.netns, "tap0")
    namespaces.enter_private_mounts(args.workdir / "libvirt-etc", args.workdir / "libvirt-cache")
    report["mount_ns"] = _ns_inode("self", "mnt")
    report["parent_mount_ns_differs"] = report.data["mount_ns"] != _ns_inode(os.getppid(), "mnt")
    try:
        asyncio.run(Run(args.netns, args.workdir, args.prefix, report).main(args.disk))
    except BaseException as exc:
        report.data["errors"].append(f"{type(exc).__name__}: {exc}")
        report.flush()
        raise
    report["ok"] = True


if __name__ == "__main__":
    main()
