"""BENCHMARK TOOLING: how fast this machine is right now, printed beside a bench's figures.

The 2-core box these benches were tuned on runs the same code 2-7x slower in some hours than in
others, for reasons outside it (the kernel shows little of it as steal time). A figure alone cannot
say which hour it came from, so a bench times a fixed piece of pure-CPU work before and after its run
(Python arithmetic and SHA-256, one thread, ~60 ms on that box in a fast hour) and reads the kernel's
steal time over the run. Two runs' figures compare when their references do.

That work fits in the CPU's caches, and runs of the same code cost up to 70 % more CPU per VM while it
took no longer: the control plane's work is memory-bound where the reference is not. So a second
reference times a million random one-byte reads from 128 MiB (memory latency, what another tenant's
traffic on the same memory slows down). A third times fresh memory faulted in, page by page: what
starting a process costs most (a QEMU's first 16 MiB, a forked launcher's copied pages), and what
this box's host makes dearer in some hours than in others (2026-12-04: 1.9 to 2.7 us a page within
the hour, against ~0.3 us on bare metal).
"""

from __future__ import annotations

import hashlib
import mmap
import operator
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")


def reference_ms(rounds: int = 3) -> float:
    """The median wall time of ``rounds`` runs of the fixed work, in ms."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i * i % 7
        block = b"x" * 4096
        for _ in range(1000):
            block = hashlib.sha256(block).digest() * 128
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


MEMORY_BYTES = 128 << 20  # well beyond any L3 cache of this class of machine
MEMORY_READS = 1_000_000


def memory_reference_ms(rounds: int = 3, size: int = MEMORY_BYTES, reads: int = MEMORY_READS) -> float:
    """The median wall time of ``rounds`` passes of ``reads`` random reads from ``size`` bytes, in ms
    (each read a cache miss; the loop runs in C, itemgetter's, so Python's own cost is small)."""
    buf = bytearray(size)  # zeroed, so every page is real memory, none the shared zero page
    pick = operator.itemgetter(*random.Random(7).choices(range(size), k=reads))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        pick(buf)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


FAULT_BYTES = 64 << 20


def touch_us(area: mmap.mmap, start: int, stop: int) -> float:
    """The wall time per page, in us, of a write to each page of ``area[start:stop]``: where those
    pages are fresh, each write is a fault (the kernel finds and zeroes a page)."""
    began = time.perf_counter()
    for offset in range(start, stop, mmap.PAGESIZE):
        area[offset] = 1
    return (time.perf_counter() - began) * 1e6 / ((stop - start) // mmap.PAGESIZE)


def fault_reference_us(rounds: int = 3, size: int = FAULT_BYTES) -> float:
    """The median over ``rounds`` of the wall time per page of faulting in ``size`` bytes of fresh
    anonymous memory, in us."""
    times = []
    for _ in range(rounds):
        fresh = mmap.mmap(-1, size)
        try:
            times.append(touch_us(fresh, 0, size))
        finally:
            fresh.close()
    return statistics.median(times)


@dataclass(frozen=True)
class CpuTimes:
    total: int  # every state's ticks, all CPUs
    steal: int

    @classmethod
    def parse(cls, stat: str) -> CpuTimes:
        """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...;
        guest time is already in user)."""
        for line in stat.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                ticks = [int(f) for f in fields[1:9]]
                ticks += [0] * (8 - len(ticks))
                return cls(total=sum(ticks), steal=ticks[7])
        raise ValueError("no aggregate cpu line in /proc/stat")

    @classmethod
    def now(cls) -> CpuTimes:
        return cls.parse(STAT.read_text())


def steal_pct(before: CpuTimes, after: CpuTimes) -> float:
    elapsed = after.total - before.total
    return 100.0 * (after.steal - before.steal) / elapsed if elapsed > 0 else 0.0


class BoxSpeed:
    """A bench calls ``start`` before its run and prints ``line()`` after it."""

    def __init__(self) -> None:
        self.before_ms = 0.0
        self.memory_before_ms = 0.0
        self.faults_before_us = 0.0
        self.cpu0 = CpuTimes(0, 0)

    def start(self) -> None:
        self.before_ms = reference_ms()
        self.memory_before_ms = memory_reference_ms()
        self.faults_before_us = fault_reference_us()
        self.cpu0 = CpuTimes.now()

    def line(self) -> str:
        cpu1 = CpuTimes.now()
        return format_line(self.before_ms, reference_ms(), steal_pct(self.cpu0, cpu1),
                           memory=(self.memory_before_ms, memory_reference_ms()),
                           faults=(self.faults_before_us, fault_reference_us()))


def format_line(before_ms: float, after_ms: float, steal: float,
                memory: tuple[float, float] | None = None, faults: tuple[float, float] | None = None) -> str:
    reads = (f"; a million random reads from memory {memory[0]:.0f} ms before, {memory[1]:.0f} ms after"
             if memory is not None else "")
    pages = (f"; fresh memory faulted in {faults[0]:.1f} us a page before, {faults[1]:.1f} us after"
             if faults is not None else "")
    return (f"box speed: reference work {before_ms:.0f} ms before the run, {after_ms:.0f} ms after "
            f"(about 60 ms on the 2-core box of the README's figures in a fast hour){reads}{pages}; CPU "
            f"steal during the run {steal:.1f} %")
