"""bench/hostmemory.py: the cost of fresh memory, step by step, and where it gets dearer; its small run
is the CI version of the bench, so it cannot rot."""

from __future__ import annotations

import errno
import mmap
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from hostmemory import MADV_HUGEPAGE, advise, amount, available_mib, huge_mib, summary, thp_setting  # noqa: E402


def test_summary_finds_where_memory_gets_dearer() -> None:
    costs = [2.1, 2.2, 2.0, 2.0, 2.4, 2.1, 38.1, 47.0, 50.4, 56.0]
    assert summary(costs, 512) == ("fresh memory: 2.1 us a page for the first 3.0 GiB, then 48.7 us (median; "
                                   "up to 56.0) for the other 2.0 GiB")


def test_summary_of_memory_as_cheap_throughout() -> None:
    assert summary([2.2, 2.1, 2.0, 9.0], 64) == "fresh memory: 2.1 us a page throughout the 256 MiB"
    assert summary([3.0], 16) == "fresh memory: 3.0 us a page throughout the 16 MiB"


def test_amounts_and_meminfo() -> None:
    assert (amount(512), amount(1024), amount(3584)) == ("512 MiB", "1.0 GiB", "3.5 GiB")
    assert available_mib("MemTotal: 24684000 kB\nMemAvailable:   23596036 kB\n") == 23043
    with pytest.raises(ValueError):
        available_mib("MemTotal: 24684000 kB\n")


def test_huge_pages_of_smaps_rollup() -> None:
    assert huge_mib("Rss:  107256 kB\nAnonymous: 99000 kB\nAnonHugePages:  63488 kB\n") == 62
    with pytest.raises(ValueError):
        huge_mib("Rss:  107256 kB\n")


def test_advice_it_cannot_take_is_an_error_not_silence() -> None:
    with pytest.raises(OSError) as raised:
        advise(mmap.PAGESIZE + 1, mmap.PAGESIZE, MADV_HUGEPAGE)  # not page-aligned
    assert raised.value.errno == errno.EINVAL


def thp_offered() -> bool:
    """Whether this kernel gives transparent huge pages to memory advised to have them."""
    setting = thp_setting()
    return setting != "absent" and "[never]" not in setting


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "bench" / "hostmemory.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_small_run_prints_each_step_and_the_summary() -> None:
    done = run("--size", "64", "--step", "16")
    assert done.returncode == 0, done.stderr
    steps = re.search(r"^16 MiB steps, us a page: (\S+) (\S+) (\S+) (\S+)$", done.stdout, re.M)
    assert steps is not None and all(float(c) > 0 for c in steps.groups()), done.stdout
    assert re.search(r"^fresh memory: \d+\.\d us a page (throughout the 64 MiB|for the first \d+ MiB, then)",
                     done.stdout, re.M), done.stdout


def test_sizes_it_refuses() -> None:
    for args, why in ((("--size", "100", "--step", "64"), "a whole number of --step"),
                      (("--size", "64", "--step", "0"), "a whole number of --step"),
                      (("--size", str(2**30)), "would leave less than 1024 MiB")):
        done = run(*args)
        assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_small_run_with_huge_pages_says_how_much_got_them() -> None:
    done = run("--size", "64", "--step", "16", "--huge")
    assert done.returncode == 0, done.stderr
    got = re.search(r"^transparent huge pages: (\d+) MiB of the 64 MiB \(", done.stdout, re.M)
    assert got is not None, done.stdout
    # 2 MiB pages inside a 64 MiB area: all but the unaligned ends, where the kernel offers them at all
    assert (int(got.group(1)) >= 60) if thp_offered() else (int(got.group(1)) == 0), done.stdout
