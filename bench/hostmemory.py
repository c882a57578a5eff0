"""BENCHMARK TOOLING: what a page of fresh memory costs on this machine, GiB after GiB.

Why: on the 2-core box these benches were tuned on (a Firecracker microVM: virtio-balloon with free
page reporting, page_reporting_order 9), memory a process frees goes back to the host within seconds,
and a page touched afterwards costs a fault at the host's too. On 2026-12-04 the first ~3 GiB faulted
in at ~2 us a page and every page beyond at 38-56 us (after a few quiet minutes, 29 us on average over
6 GiB). A 100-VMI lane keeps ~6 GiB of fresh pages (per VM: QEMU's start ~6,800 faults, its guest's
boot ~6,400, the launcher ~3,800, libvirtd ~2,000), so the same lane costs a few CPU-seconds of faults
on one run and tens on another: the launches' CPU to Running goes 3-4x (bench/launchcost.py), and
with it the lane's P95. bench/boxspeed.py's fault probe (64 MiB) sees only the cheap first GiBs.

    .venv/bin/python bench/hostmemory.py [--size 8192] [--step 512]   (MiB)

It faults in --size MiB of anonymous memory page by page (4 KiB pages: no transparent huge pages),
prints the cost per page of each --step, and frees it all. It refuses a size that would leave the
machine less than 1 GiB of available memory.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
from boxspeed import touch_us  # noqa: E402 - bench/boxspeed.py, beside this script

MADV_NOHUGEPAGE = 15
MIB = 2**20
HEADROOM_MIB = 1024  # what the run leaves the machine, at least
# A step this many times dearer than the first ones is past what the host keeps warm for this machine.
DEAR = 5.0


def available_mib(meminfo: str) -> int:
    """MemAvailable of /proc/meminfo's text, in MiB (pure)."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise ValueError("no MemAvailable in /proc/meminfo")


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


def fault_in(size_mib: int, step_mib: int) -> list[float]:
    """Microseconds a page for each step, touching one byte of every page of fresh anonymous memory."""
    area = mmap.mmap(-1, size_mib * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        start = ctypes.c_char.from_buffer(area)
        ctypes.CDLL(None).madvise(ctypes.addressof(start), ctypes.c_size_t(size_mib * MIB), MADV_NOHUGEPAGE)
        del start  # the buffer export would keep the mapping from closing
        return [touch_us(area, base, base + step_mib * MIB) for base in range(0, size_mib * MIB, step_mib * MIB)]
    finally:
        area.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192, help="MiB to fault in (default 8192)")
    p.add_argument("--step", type=int, default=512, help="MiB a step (default 512)")
    args = p.parse_args()
    if args.step < 1 or args.size < args.step or args.size % args.step:
        p.error("--size must be a whole number of --step, and --step at least 1 MiB")
    free = available_mib(Path("/proc/meminfo").read_text())
    if args.size > free - HEADROOM_MIB:
        p.error(f"--size {args.size} MiB would leave less than {HEADROOM_MIB} MiB of the {free} MiB available")
    costs = fault_in(args.size, args.step)
    print(f"{args.step} MiB steps, us a page: " + " ".join(f"{c:.1f}" for c in costs))
    print(summary(costs, args.step), flush=True)


if __name__ == "__main__":
    entry.run(main, "hostmemory.py")
