"""BENCHMARK TOOLING: what a page of fresh memory costs on this machine, GiB after GiB.

Why: on the 2-core box these benches were tuned on (a Firecracker microVM: virtio-balloon with free
page reporting, page_reporting_order 9), memory a process frees goes back to the host within seconds,
and a page touched afterwards costs a fault at the host's too. On 2026-12-04 the first ~3 GiB faulted
in at ~2 us a page and every page beyond at 38-56 us (after a few quiet minutes, 29 us on average over
6 GiB). A 100-VMI lane keeps ~6 GiB of fresh pages (per VM: QEMU's start ~6,800 faults, its guest's
boot ~6,400, the launcher ~3,800, libvirtd ~2,000), so the same lane costs a few CPU-seconds of faults
on one run and tens on another: the launches' CPU to Running goes 3-4x (bench/launchcost.py), and
with it the lane's P95. bench/boxspeed.py's fault probe (64 MiB) sees only the cheap first GiBs.

    .venv/bin/python bench/hostmemory.py [--size 8192] [--step 512] [--huge]   (MiB)

It faults in --size MiB of anonymous memory page by page (4 KiB pages: no transparent huge pages),
prints the cost per 4 KiB of each --step, and frees it all. With --huge it asks for transparent huge
pages instead (MADV_HUGEPAGE: one fault a 2 MiB page) and prints how much of the area got them. On
2026-12-04 huge pages cost 43-57 us per 4 KiB from the first MiB on, where 4 KiB pages cost 2.0 for
the first GiBs: a huge page needs a whole free 2 MiB block, and free blocks that big are what the
balloon has handed back to the host. So here huge pages make fresh memory dearer, not cheaper (why
a TCG guest's QEMU gets none, launcher/libvirtd.py). It refuses a size that would leave the machine
less than 1 GiB of available memory.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
from boxspeed import touch_us  # noqa: E402 - bench/boxspeed.py, beside this script
from procstat import kib_of  # noqa: E402 - bench/procstat.py, beside this script

MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MIB = 2**20
HEADROOM_MIB = 1024  # what the run leaves the machine, at least
# A step this many times dearer than the first ones is past what the host keeps warm for this machine.
DEAR = 5.0


def required_mib(text: str, field: str, where: str) -> int:
    """A ``<field> <n> kB`` line's figure in MiB (pure); a text without it is an error."""
    if (kib := kib_of(text, field)) is None:
        raise ValueError(f"no {field.rstrip(':')} in {where}")
    return kib // 1024


def available_mib(meminfo: str) -> int:
    """MemAvailable of /proc/meminfo's text, in MiB (pure)."""
    return required_mib(meminfo, "MemAvailable:", "/proc/meminfo")


def amount(mib: int) -> str:
    """MiB as a person reads them (pure): 256 MiB, 3.0 GiB."""
    return f"{mib} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"


def summary(costs: list[float], step_mib: int) -> str:
    """One line (pure): the first steps' cost a page, and where memory gets dearer than DEAR times that,
    the rest's (their median)."""
    cheap = statistics.median(costs[: max(1, min(3, len(costs)))])
    dear_from = next((i for i, c in enumerate(costs) if c > DEAR * cheap), None)
    head = f"fresh memory: {cheap:.1f} us a page"
    if dear_from is None:
        return f"{head} throughout the {amount(len(costs) * step_mib)}"
    rest = costs[dear_from:]
    return (f"{head} for the first {amount(dear_from * step_mib)}, then {statistics.median(rest):.1f} us "
            f"(median; up to {max(rest):.1f}) for the other {amount(len(rest) * step_mib)}")


def advise(address: int, length: int, advice: int) -> None:
    """madvise(2). The address goes as a pointer: passed as a plain int, ctypes would cut it to 32 bits
    and the call fail (ENOMEM), as this bench's first version's did without a word."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.madvise(address, length, advice) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"madvise({advice}): {os.strerror(errno)}")


def huge_mib(smaps_rollup: str) -> int:
    """AnonHugePages of /proc/<pid>/smaps_rollup's text, in MiB (pure): the process's memory in
    transparent huge pages."""
    return required_mib(smaps_rollup, "AnonHugePages:", "smaps_rollup")


def own_huge_mib() -> int:
    return huge_mib(Path("/proc/self/smaps_rollup").read_text())


def fault_in(size_mib: int, step_mib: int, huge: bool = False) -> tuple[list[float], int]:
    """Microseconds a 4 KiB page for each step, touching one byte of every 4 KiB of fresh anonymous
    memory, and the MiB of it that came as transparent huge pages."""
    area = mmap.mmap(-1, size_mib * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        start = ctypes.c_char.from_buffer(area)
        advise(ctypes.addressof(start), size_mib * MIB, MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE)
        del start  # the buffer export would keep the mapping from closing
        before = own_huge_mib()
        costs = [touch_us(area, base, base + step_mib * MIB) for base in range(0, size_mib * MIB, step_mib * MIB)]
        return costs, own_huge_mib() - before
    finally:
        area.close()


def thp_setting() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return "absent"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192, help="MiB to fault in (default 8192)")
    p.add_argument("--step", type=int, default=512, help="MiB a step (default 512)")
    p.add_argument("--huge", action="store_true", help="ask for transparent huge pages (MADV_HUGEPAGE)")
    args = p.parse_args()
    if args.step < 1 or args.size < args.step or args.size % args.step:
        p.error("--size must be a whole number of --step, and --step at least 1 MiB")
    free = available_mib(Path("/proc/meminfo").read_text())
    if args.size > free - HEADROOM_MIB:
        p.error(f"--size {args.size} MiB would leave less than {HEADROOM_MIB} MiB of the {free} MiB available")
    costs, huge = fault_in(args.size, args.step, args.huge)
    print(f"{args.step} MiB steps, us a page: " + " ".join(f"{c:.1f}" for c in costs))
    if args.huge:
        print(f"transparent huge pages: {huge} MiB of the {args.size} MiB "
              f"(/sys/kernel/mm/transparent_hugepage/enabled: {thp_setting()})")
    print(summary(costs, args.step), flush=True)


if __name__ == "__main__":
    entry.run(main, "hostmemory.py")
