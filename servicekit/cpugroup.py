"""A node's guests, and its launches, each as one CPU group (a cgroup of the cpu controller), as
kubelet puts pods under kubepods: with autogroups (Debian's default) every QEMU, launcher and
libvirtd is a session, so a scheduling group, of its own. A booting crowd of 60 guests at nice 15
weighed 60 x 36 against a launch's 335, and 50 launches at nice 5 weighed 50 x 335 against the API's
1024: it got a twentieth of the CPU, and answered in hundreds of milliseconds. In one group each crowd
weighs as one, however many there are. A task in a cgroup other than the root leaves its autogroup, so
the group's weight is all that counts.

Only cgroup v1's cpu hierarchy is used (where the group can be made beside everything else); where it
is missing or not ours to write (a v2 host, a read-only /sys), guests keep their nice alone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from servicekit.paths import path_under

# All of a node's guests together weigh as one process at nice 12 against the control plane's and the
# launches' groups: they get what those leave, and never nothing, except while the node launches
# (yield_to_launches: then only what nothing else wants).
GUEST_SHARES = 64
# All of a node's launches (launchers and their libvirtds) together: a quarter of one control-plane
# service (nats-server, the scheduler, a handler at 1024 each), so a crowd of them cannot starve the
# API; what the control plane leaves idle they still take whole.
LAUNCH_SHARES = 256
GUESTS = "guests"
LAUNCHES = "launches"
SHARES = {GUESTS: GUEST_SHARES, LAUNCHES: LAUNCH_SHARES}


def cpu_mount(mountinfo: str) -> Path | None:
    """Where cgroup v1's cpu controller is mounted, from /proc/self/mountinfo's text."""
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, extra = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        if "cpu" in extra[2].split(","):
            return Path(fields[4])
    return None


def group_name(netns_prefix: str, node: str, kind: str = GUESTS) -> str:
    """The node's guests' or launches' group: named like its namespaces, so two labs on one host
    never share one."""
    return f"{netns_prefix}-{node}-{kind}"


def locate(name: str, mountinfo: Path = Path("/proc/self/mountinfo")) -> Path | None:
    """Where the group is (or would be); None without a cpu hierarchy."""
    try:
        root = cpu_mount(mountinfo.read_text())
    except OSError:
        return None
    return None if root is None else path_under(root, name, what="CPU group name")


def make(name: str, shares: int = GUEST_SHARES, mountinfo: Path = Path("/proc/self/mountinfo")) -> Path | None:
    """The group (made if new) with its weight set, not idle (a handler that died while its node
    launched left it so); None where groups cannot be had here."""
    group = locate(name, mountinfo)
    if group is None:
        return None
    try:
        group.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # kernels before 5.15 have no cpu.idle
            (group / "cpu.idle").write_text("0\n")
        (group / "cpu.shares").write_text(f"{shares}\n")
    except OSError:
        return None
    return group


def yield_to_launches(group: Path, launching: bool, shares: int = GUEST_SHARES) -> bool:
    """While its node launches, the guests' group is idle (cpu.idle): its tasks run only on a CPU that
    nothing else wants, and a waking launch takes the CPU from them at once. At 64 shares they still
    took a quarter of a 2-core box in a 100-VM lane, much of it in the small gaps of each launch's
    hand-offs (launcher, libvirtd, QEMU). Once no launch is left the group weighs ``shares`` again
    (clearing cpu.idle leaves 1024). False where the kernel or the group cannot (the guests then
    keep their weight throughout)."""
    try:
        (group / "cpu.idle").write_text("1\n" if launching else "0\n")
        if not launching:
            (group / "cpu.shares").write_text(f"{shares}\n")
    except OSError:
        return False
    return True


def join(group: Path, pid: int) -> bool:
    """Moves the process (all its threads) into the group; False if it is gone or the group is."""
    try:
        (group / "cgroup.procs").write_text(f"{pid}\n")
    except OSError:
        return False
    return True


def members(group: Path) -> list[int]:
    try:
        return [int(word) for word in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove(group: Path) -> bool:
    """Removes the group once no process is left in it (a guest still running keeps it); True if gone."""
    with contextlib.suppress(OSError):
        os.rmdir(group)
    return not group.exists()
