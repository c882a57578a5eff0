"""Guests and launches below the control plane, so a crowd of launching and booting VMs cannot starve
the API, the scheduler, the handlers or NATS (which keep nice 0), while a launch still outweighs a
running guest.

Two knobs, because Linux has two levels. Each launcher, libvirtd and QEMU is a session of its own
(setsid), and with kernel.sched_autogroup_enabled (Debian's default) every session is a scheduling
group that competes with the others at its group's nice, whatever its threads' nice: measured on
this box, 30 booting guests were 30 groups at nice 0 against one group for the whole control
plane, which then had ~1/31 of the CPU (API p99 1.4 s). So each process's autogroup is lowered as
well as its threads (the threads' nice is what counts where autogroups are off, or inside one).
KubeVirt gets this from the pod's cgroup CPU shares; here the launcher's libvirtd runs QEMU without
cgroups. A launcher lowers itself before it starts anything, so its libvirtd inherits the thread
nice; the launcher then lowers libvirtd's group and, once the domain runs, QEMU's. A QEMU about to
be ended is raised back to the launcher's nice first (launcher.libvirtd.raise_domain).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LAUNCHER_NICE = 5  # CFS weight 335 against the control plane's 1024
GUEST_NICE = 15  # weight 36: a hundred booting guests weigh 3.5 control planes, not a hundred


def group_nice(pid: int) -> int | None:
    """The nice of pid's autogroup; None where the kernel has no autogroups (or pid is gone)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def lower_group(pid: int, nice: int) -> bool:
    """pid's autogroup (its session's) to nice, never above where it was; False where there is none."""
    return _set_group(pid, nice, lowering=True)


def _moves(now: int, nice: int, *, lowering: bool) -> bool:
    """Whether setting ``nice`` goes the one way asked: lowering never raises, raising never lowers."""
    return now < nice if lowering else now > nice


def _set_group(pid: int, nice: int, *, lowering: bool) -> bool:
    now = group_nice(pid)
    if now is None:
        return False
    if _moves(now, nice, lowering=lowering):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        except OSError:
            return False
    return True


def lower_launcher(nice: int = LAUNCHER_NICE) -> int:
    """The calling launcher (its thread and its session's group) to nice, never above where it was (an
    operator who ran the handler lower keeps that). Call it before any thread exists: they inherit
    the thread's nice, not the process's, so the one thread there is is all lower_process lowers.
    Returns how many threads were lowered."""
    return lower_process(os.getpid(), nice)


def lower_process(pid: int, nice: int) -> int:
    """Each thread of pid to nice (threads it starts later inherit it) and its autogroup; returns how
    many threads were lowered."""
    return _set_process(pid, nice, lowering=True)


def raise_process(pid: int, nice: int) -> int:
    """Each thread of pid, and its autogroup, up to nice where they are below it (a guest about to end
    goes back to a launch's weight: see launcher.libvirtd.raise_domain); returns how many threads
    are at nice now."""
    return _set_process(pid, nice, lowering=False)


def _set_process(pid: int, nice: int, *, lowering: bool) -> int:
    done = 0
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return 0
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            now = os.getpriority(os.PRIO_PROCESS, tid)
            if _moves(now, nice, lowering=lowering):
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            done += 1
    _set_group(pid, nice, lowering=lowering)
    return done
