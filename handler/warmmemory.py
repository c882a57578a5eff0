"""Memory its host has backed, kept for the node's next launches (``--warm-memory``).

Why: a node that is itself a VM whose host takes back free memory (virtio-balloon's free page
reporting, as Firecracker and cloud hosts do) pays twice for every fresh page: its own fault and the
host's. On the 2-core box of docs/benchmarks.md a page faulted in after a quiet spell cost 10-50 us
instead of ~2, and each launch takes ~75 MiB of fresh pages (QEMU's start, the launcher's copies of
the fork server's pages, libvirtd, the guest's first seconds): the same 100-VMI lane took 0.25 s of
CPU a launch and P50 / P95 5.2 / 10.1 s after four quiet minutes, 0.13 s and 2.1 / 3.3 s with 6 GiB
of touched memory handed back to the kernel as the launches began.

So the handler holds a reserve of touched anonymous memory while the node is quiet, and gives a
launch's worth back to the kernel (MADV_DONTNEED) as each launch begins: the kernel hands freed pages
out before those it has reported, so the launch's processes take pages the host still backs. The
reserve is refilled once no launch is under way, in steps, at idle priority (SCHED_IDLE), and held
only while the node has ``headroom`` of memory available besides it: under pressure it is given back
before anything else has to go. On a machine whose host does not take memory back it buys nothing,
so ``auto`` (the default) keeps none there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import structlog

from handler.nodeinfo import MemInfo, meminfo

log = structlog.get_logger()

MIB = 2**20
GIB = 2**30
STEP = 32 * MIB  # what a refill touches between two looks at whether a launch began
PER_LAUNCH = 80 * MIB  # a launch's fresh pages (QEMU ~27 MiB, launcher ~15, libvirtd ~8, the guest's first seconds)
AUTO_MAX = 3 * GIB  # a burst of ~40 launches a node; more held idle is more the host is not given back
VIRTIO_BALLOON = 0x0005  # the virtio device ID of a memory balloon
BALLOON_F_REPORTING = 5  # its feature bit: free page reporting (the virtio spec, 5.5.3)


class WarmMemoryError(ValueError):
    """A --warm-memory value that is neither auto, 0 nor a size."""


def reclaiming_host(sysfs: Path = Path("/sys")) -> bool:
    """Whether this machine hands its free memory back to its host: a virtio balloon that reports
    free pages. ``features`` is the negotiated feature bits as a string of 0s and 1s, bit 0 first."""
    for device in sorted((sysfs / "bus" / "virtio" / "devices").glob("virtio*")):
        try:
            kind = int((device / "device").read_text().strip(), 16)
            features = (device / "features").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == VIRTIO_BALLOON and features[BALLOON_F_REPORTING:BALLOON_F_REPORTING + 1] == "1":
            return True
    return False


def auto_size(mem_total: int, reclaiming: bool) -> int:
    """The reserve ``auto`` keeps (pure): an eighth of the machine's memory, at most AUTO_MAX, whole
    steps; none where the host keeps what it gave."""
    return 0 if not reclaiming else min(AUTO_MAX, mem_total // 8) // STEP * STEP


def headroom(mem_total: int) -> int:
    """Memory left available to everything else before the reserve gives any back (pure)."""
    return max(2 * GIB, mem_total // 8)


def goal(size: int, held: int, available: int, room: int) -> int:
    """What to hold (pure): at most ``size``, and only while ``room`` stays available beside it
    (``available`` is the kernel's MemAvailable, which does not count what is held); short of
    ``size``, whole steps more, so a little room coming and going moves nothing. Shrinking to it is
    what pressure asks for."""
    ceiling = max(0, min(size, held + available - room))
    if ceiling <= held or ceiling == size:
        return ceiling
    return held + (ceiling - held) // STEP * STEP


def parse(text: str, quantity: Callable[[str], int], total: int) -> int | None:
    """--warm-memory: ``auto`` (None: decided on the machine), ``0`` (none) or a size such as 2Gi, at
    most half the ``total`` memory the handler has (more would leave the node's guests less than the
    reserve it keeps for their launches)."""
    if text == "auto":
        return None
    try:
        size = quantity(text)
    except ValueError as exc:
        raise WarmMemoryError(f"--warm-memory: auto, 0 or a size such as 2Gi, not {text!r}") from exc
    if size < 0:
        raise WarmMemoryError(f"--warm-memory: a size cannot be negative ({text!r})")
    if size > total // 2:
        raise WarmMemoryError(f"--warm-memory: {text} is more than half the {total // MIB} MiB this handler has")
    return size // STEP * STEP


NO_LIMIT = 2**62  # cgroup v1 says "no limit" as a page-rounded 2^63 - 1


def cgroup_dirs(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> tuple[list[Path], str, str]:
    """Where this process's memory limits are (pure): its cgroup's directory and each parent's up to
    the hierarchy's root, with the names of the limit and usage files. v1's memory controller where
    it is mounted (a hybrid host), else v2's unified hierarchy."""
    v1 = v2 = None
    for line in proc_cgroup.splitlines():
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            v1 = (root / "memory", path)
        elif hid == "0" and controllers == "":
            v2 = (root, path)
    base, path = v1 or v2 or (root, "/")
    files = ("memory.limit_in_bytes", "memory.usage_in_bytes") if v1 else ("memory.max", "memory.current")
    here = base / path.strip("/")
    dirs = [here, *[p for p in here.parents if p.is_relative_to(base)]]
    return dirs, files[0], files[1]


def within_limits(info: MemInfo, limits: list[tuple[str, str]]) -> MemInfo:
    """The machine's figures bounded by the cgroups' limits and usage (pure): a handler in a container
    or a unit with MemoryMax= has that much, not the machine's."""
    total, available = info.total, info.available
    for limit_text, usage_text in limits:
        if limit_text.strip() in ("", "max") or int(limit_text) >= NO_LIMIT:
            continue
        limit = int(limit_text)
        total, available = min(total, limit), min(available, max(0, limit - int(usage_text or "0")))
    return MemInfo(total, available)


def read_meminfo() -> MemInfo:
    dirs, limit_file, usage_file = cgroup_dirs(Path("/proc/self/cgroup").read_text())
    limits = []
    for d in dirs:
        try:
            limits.append(((d / limit_file).read_text(), (d / usage_file).read_text()))
        except OSError:
            continue  # the root has no limit file; a directory not mounted here tells nothing
    return within_limits(meminfo(Path("/proc/meminfo").read_text()), limits)


class Memory(Protocol):
    """An area of address space whose pages are touched or given back by range."""

    def populate(self, offset: int, nbytes: int) -> None: ...

    def discard(self, offset: int, nbytes: int) -> None: ...


MADV_DONTNEED = 4
MADV_NOHUGEPAGE = 15  # a huge page needs a whole free 2 MiB block: what such a host has taken back
MADV_POPULATE_WRITE = 23  # Linux 5.14: fault the range in, writable, in one call
PROT_RW = 0x1 | 0x2
MAP_PRIVATE_ANONYMOUS_NORESERVE = 0x02 | 0x20 | 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value


class AnonymousMemory:
    """The real area: one private anonymous mapping of ``limit`` bytes (address space only until
    touched). ctypes' calls let go of the GIL, so a step's faults hold up no other thread."""

    def __init__(self, limit: int) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mmap.restype = ctypes.c_void_p
        self._libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_long]
        self._libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.limit = limit
        address = self._libc.mmap(None, limit, PROT_RW, MAP_PRIVATE_ANONYMOUS_NORESERVE, -1, 0)
        if address in (None, MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap of the warm memory failed")
        self.address: int = address
        self._madvise(0, limit, MADV_NOHUGEPAGE)

    def _madvise(self, offset: int, nbytes: int, advice: int) -> None:
        if not 0 <= offset <= offset + nbytes <= self.limit:
            raise ValueError(f"{offset}+{nbytes} is outside the warm memory's {self.limit} bytes")
        if self._libc.madvise(self.address + offset, nbytes, advice) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"madvise({advice}) of the warm memory: {os.strerror(code)}")

    def populate(self, offset: int, nbytes: int) -> None:
        try:
            self._madvise(offset, nbytes, MADV_POPULATE_WRITE)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise  # ENOMEM above all: no room, and a write a page would wake the OOM killer
            ctypes.memset(self.address + offset, 1, nbytes)  # a kernel before 5.14 knows no POPULATE_WRITE

    def discard(self, offset: int, nbytes: int) -> None:
        self._madvise(offset, nbytes, MADV_DONTNEED)

    def close(self) -> None:
        self._libc.munmap(self.address, self.limit)


class FakeMemory:
    """Stateful fake of Memory: which MiBs are touched, and each call in order."""

    def __init__(self) -> None:
        self.touched: set[int] = set()  # offsets of touched MiBs
        self.calls: list[tuple[str, int, int]] = []

    def populate(self, offset: int, nbytes: int) -> None:
        self.touched.update(range(offset, offset + nbytes, MIB))
        self.calls.append(("populate", offset, nbytes))

    def discard(self, offset: int, nbytes: int) -> None:
        self.touched.difference_update(range(offset, offset + nbytes, MIB))
        self.calls.append(("discard", offset, nbytes))


class WarmMemory:
    """The reserve's policy over a Memory of ``size`` bytes: ``held`` bytes at its start touched.
    A refill touches its steps outside the lock, so a launch beginning never waits for one."""

    def __init__(self, memory: Memory, size: int, read: Callable[[], MemInfo] = read_meminfo,
                 per_launch: int = PER_LAUNCH) -> None:
        self.memory = memory
        self.size = size
        self.read = read
        self.per_launch = per_launch
        self._lock = threading.Lock()
        self._held = 0
        self._launches = 0  # launches begun: a refill under way stops when this moves

    @property
    def held(self) -> int:
        return self._held

    def _give_back(self, nbytes: int) -> int:
        nbytes = min(nbytes, self._held)
        if nbytes > 0:
            self.memory.discard(self._held - nbytes, nbytes)
            self._held -= nbytes
        return nbytes

    def launch_begins(self) -> int:
        """A launch's worth given back to the kernel, for the launch to take; what was given."""
        with self._lock:
            self._launches += 1
            return self._give_back(self.per_launch)

    def relieve(self) -> int:
        """Under memory pressure, give back what the node needs; what was given."""
        info = self.read()
        with self._lock:
            want = goal(self.size, self._held, info.available, headroom(info.total))
            given = self._give_back(self._held - want) if want < self._held else 0
        if given:
            log.info("warm memory given back under pressure", given=given, held=self._held,
                     available=info.available)
        return given

    def release(self) -> None:
        """All of it given back (the handler stopping)."""
        with self._lock:
            self._launches += 1
            self._give_back(self._held)

    def wants_more(self) -> bool:
        """Whether a refill would add a step."""
        info = self.read()
        held = self._held
        return goal(self.size, held, info.available, headroom(info.total)) > held

    def refill(self, idle: Callable[[], bool], pause: Callable[[float], None] = time.sleep) -> int:
        """Grow, a step at a time, towards the goal while ``idle()`` holds and no launch begins;
        blocking (run it in a thread of its own, under ``idle_priority``). Between steps it pauses as
        long as the step took, so a refill takes at most half a core even from guests. What was added."""
        with self._lock:
            launches, start = self._launches, self._held
        while idle():
            info = self.read()
            with self._lock:
                base = self._held
                step = min(STEP, goal(self.size, base, info.available, headroom(info.total)) - base)
                if self._launches != launches or step <= 0:
                    break
            began = time.monotonic()
            try:
                self.memory.populate(base, step)
            except OSError:
                self.memory.discard(base, step)  # what it touched before it failed: not held, so not kept
                raise
            took = time.monotonic() - began
            with self._lock:
                if self._held != base:  # a launch took from the top meanwhile: this step is its too
                    self.memory.discard(base, step)
                    break
                self._held += step
            pause(took)
        return self._held - start


@contextlib.contextmanager
def idle_priority() -> Iterator[None]:
    """The calling thread at SCHED_IDLE for the block (Linux schedules threads, not processes): what
    the reserve costs is taken from nobody who wants the CPU."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
