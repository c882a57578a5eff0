"""Guests below the control plane: every thread of a VM's QEMU runs at a lower CPU priority (nice
GUEST_NICE), so a crowd of booting guests cannot starve the API, the scheduler, the handlers or the
next launch, which keep the default. (KubeVirt gets this from the pod's cgroup CPU shares; here the
launcher's libvirtd runs QEMU without cgroups, and nice is per thread on Linux.)"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from launcher.libvirtd import QEMU_RUN, is_qemu_of

GUEST_NICE = 10


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
