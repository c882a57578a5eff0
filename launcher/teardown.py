"""A launcher's end, whatever state its launch reached: the domain, its private libvirtd and what
that left running, the pod's network namespace and NICs, and the VMI's directory (its lock and pid
files excepted: they are held until the launcher exits).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import structlog

from launcher import namespaces
from launcher.guestnics import GuestNics
from launcher.libvirtd import PrivateLibvirtd
from servicekit import launcherlock, processes

log = structlog.get_logger()


async def stop_libvirtd(libvirtd: PrivateLibvirtd) -> None:
    await libvirtd.settle()
    try:
        await asyncio.to_thread(libvirtd.stop)
    except Exception:
        log.warning("libvirtd stop failed", exc_info=True)
    # As their subreaper, what libvirtd left running is ours: a QEMU it was starting when the stop
    # came (the start runs on in its thread), a capability probe. Left, it would outlive us.
    leftover = await asyncio.to_thread(processes.end_children, 5.0)
    if leftover:
        log.warning("ended processes libvirtd left behind", pids=leftover)


async def tear_down(libvirtd: PrivateLibvirtd, nics: GuestNics, *, vmi: str, pod_netns: str, vmi_dir: Path) -> None:
    await libvirtd.settle()
    try:
        await libvirtd.destroy_and_undefine(vmi)
    except Exception:
        log.warning("domain cleanup failed", exc_info=True)
    await stop_libvirtd(libvirtd)
    await asyncio.to_thread(namespaces.delete_netns, pod_netns)
    await nics.unplug()
    for path in vmi_dir.iterdir() if vmi_dir.exists() else []:
        if path.name not in (launcherlock.PID_FILE, launcherlock.LOCK_FILE):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
