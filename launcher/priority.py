"""Guests and launches below the control plane. A launcher lowers itself to LAUNCHER_NICE before it
starts anything, so its libvirtd (and what that runs) inherits it; every thread of the VM's QEMU then
goes lower still (GUEST_NICE). A crowd of launching and booting VMs thus cannot starve the API, the
scheduler, the handlers or NATS, which keep the default, while a launch still outweighs a running
guest (CFS weights 335 : 110). (KubeVirt gets this from the pod's cgroup CPU shares; here the
launcher's libvirtd runs QEMU without cgroups, and nice is per thread on Linux.)"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from launcher.libvirtd import QEMU_RUN, is_qemu_of

GUEST_NICE = 10
LAUNCHER_NICE = 5


def lower_launcher(nice: int = LAUNCHER_NICE) -> int:
    """The calling thread (a launcher before it starts any thread) to nice, never above where it was
    (an operator who ran the handler lower keeps that); returns the nice now in force."""
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if now < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    return max(now, nice)


def lower_guest(pid: int, nice: int = GUEST_NICE) -> int:
    """Renice each thread of pid (threads it starts later inherit it); returns how many were."""
    done = 0
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return 0
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            done += 1
    return done


def lower_domain(name: str, nice: int = GUEST_NICE) -> int | None:
    """The domain's QEMU (by the pidfile its libvirtd wrote), lowered; its pid, None if not found."""
    try:
        text = (QEMU_RUN / f"{name}.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not is_qemu_of(int(text), name):
        return None
    lower_guest(int(text), nice)
    return int(text)
