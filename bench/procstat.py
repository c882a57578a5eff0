"""What the benchmarks read of a process from /proc: its CPU ticks, its age, its memory (PSS and RSS),
its name, the processes of a network namespace and a pidfile's PID. Beside the scripts that import it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (and its threads), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def age_s(pid: int) -> float:
    """How long ago the process started, in seconds (its start time after boot, against the uptime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(fields[19]) / TICKS


def total_cpu_ticks(pids: list[int]) -> int:
    """utime + stime of these processes together; one gone meanwhile counts nothing."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            ticks += cpu_ticks(pid)
    return ticks


def kib_of(text: str, field: str) -> int | None:
    """The figure of a ``<field> <n> kB`` line of a /proc file's text (meminfo, status, smaps_rollup),
    ``field`` with its colon; None where there is none (pure)."""
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return None


def _kib(path: str, field: str) -> int:
    return kib_of(Path(path).read_text(), field) or 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages counted once across the processes sharing them."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def rss_kib(pid: int) -> int:
    return _kib(f"/proc/{pid}/status", "VmRSS:")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])
