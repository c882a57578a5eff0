"""bench/boxspeed.py: the machine's speed beside a bench's figures (a fixed piece of CPU work, and the
kernel's steal time over the run)."""

from __future__ import annotations

import mmap
import sys
import time

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from boxspeed import (  # noqa: E402 - bench/, as the benches
    CpuTimes,
    fault_reference_us,
    format_line,
    memory_reference_ms,
    reference_ms,
    steal_pct,
)

STAT = """cpu  1634565 502216 525512 12222122 16466 0 32995 108684 19 0
cpu0 817000 251000 262000 6111000 8000 0 16000 54000 10 0
intr 1 2 3
"""


def test_the_aggregate_line_is_read_and_steal_is_its_eighth_field() -> None:
    times = CpuTimes.parse(STAT)
    assert times.steal == 108684
    assert times.total == 1634565 + 502216 + 525512 + 12222122 + 16466 + 0 + 32995 + 108684


def test_steal_is_a_share_of_all_ticks_between_two_reads() -> None:
    assert steal_pct(CpuTimes(total=1000, steal=10), CpuTimes(total=1200, steal=40)) == pytest.approx(15.0)
    assert steal_pct(CpuTimes(total=1000, steal=10), CpuTimes(total=1000, steal=10)) == 0.0


def test_a_stat_without_its_aggregate_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        CpuTimes.parse("cpu0 1 2 3 4 5 6 7 8\n")


def test_the_reference_work_takes_time_and_the_line_says_both_ends() -> None:
    assert reference_ms(rounds=1) > 1.0  # a million loop rounds and a thousand SHA-256 blocks are not free
    assert format_line(61.4, 180.2, 3.25).startswith(
        "box speed: reference work 61 ms before the run, 180 ms after")
    assert "CPU steal during the run 3.2 %" in format_line(61.4, 180.2, 3.25)


def test_reads_far_apart_in_memory_take_longer_than_reads_within_a_cache() -> None:
    # the same number of reads, from 128 MiB and from 16 KiB: only memory latency tells them apart
    far = memory_reference_ms(rounds=3, reads=200_000)
    near = memory_reference_ms(rounds=3, size=16 << 10, reads=200_000)
    assert far > near > 0.0


def test_the_line_gives_the_memory_reference_when_measured() -> None:
    line = format_line(61.4, 62.0, 0.0, memory=(83.2, 120.6))
    assert "a million random reads from memory 83 ms before, 121 ms after; CPU steal during the run 0.0 %" in line
    assert "random reads" not in format_line(61.4, 62.0, 0.0)


def test_faulting_in_fresh_memory_costs_more_a_page_than_touching_memory_already_there() -> None:
    fresh = fault_reference_us(rounds=1, size=16 << 20)
    held = mmap.mmap(-1, 16 << 20)
    try:
        for offset in range(0, len(held), mmap.PAGESIZE):
            held[offset] = 1  # faulted in once: the timed pass below only writes
        start = time.perf_counter()
        for offset in range(0, len(held), mmap.PAGESIZE):
            held[offset] = 2
        again = (time.perf_counter() - start) * 1e6 / (len(held) // mmap.PAGESIZE)
    finally:
        held.close()
    assert fresh > again > 0.0


def test_the_line_gives_the_fault_reference_when_measured() -> None:
    line = format_line(61.4, 62.0, 0.0, memory=(83.2, 120.6), faults=(1.94, 2.71))
    assert "121 ms after; fresh memory faulted in 1.9 us a page before, 2.7 us after; CPU steal" in line
    assert "faulted in" not in format_line(61.4, 62.0, 0.0)
