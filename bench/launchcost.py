"""BENCHMARK TOOLING: the CPU each launch of a run spent up to Running, read back from the launchers'
logs (their "launch cpu" line, launcher/launchclock.py), printed beside the lane's figures.

Why: on the 2-core box these benches were tuned on, the lane's creation->Running P95 went from ~3.5 s
to 18-30 s between runs minutes apart, the code unchanged. The box-speed line (bench/boxspeed.py) did
not always show it: its probes run before and after the lane, on a quiet box. What did is each launch's
own CPU to Running, which the same code spends 3-4x over in a slow stretch (2026-12-04: P50 0.13 s in
fast runs, 0.44 and 0.55 s in two slow ones, QEMU's start 0.04 -> 0.20-0.24 s of it). A lane whose launches
cost their usual CPU and still came late waited on something; one whose launches cost 3x ran on a
slower box.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

EVENT = "launch cpu"


@dataclass(frozen=True)
class LaunchCpu:
    """CPU seconds one launch spent up to its domain running, by process."""

    launcher: float  # the launcher process itself
    children: float  # the subprocesses it waited for
    libvirtd: float
    qemu: float

    @property
    def total(self) -> float:
        return self.launcher + self.children + self.libvirtd + self.qemu


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def parse(lines: Iterable[str], uids: set[str]) -> dict[str, LaunchCpu]:
    """The launches of ``uids`` (a VMI's uid: a name used again in another run is another launch) found
    among log lines, by uid (pure). The launcher's own figure is its CPU by its last stage; a launch
    whose line lacks a process (libvirtd or QEMU gone before it was read) is left out, not understated.
    Lines that are not such JSON are passed over: a log holds other events and may end mid-line."""
    found: dict[str, LaunchCpu] = {}
    for line in lines:
        if EVENT not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("event") != EVENT or event.get("uid") not in uids:
            continue
        stages = event.get("launcher")
        by_stage = [t for v in stages.values() if (t := _seconds(v)) is not None] if isinstance(stages, dict) else []
        children, libvirtd, qemu = (_seconds(event.get(k)) for k in ("children", "libvirtd", "qemu"))
        if not by_stage or children is None or libvirtd is None or qemu is None:
            continue
        found[str(event["uid"])] = LaunchCpu(max(by_stage), children, libvirtd, qemu)
    return found


def read(logs: Path, uids: set[str]) -> dict[str, LaunchCpu]:
    """The launches of ``uids`` in a lab's launcher logs (``<state>/logs/launcher-<node>-<vmi>.log``)."""
    found: dict[str, LaunchCpu] = {}
    for path in sorted(logs.glob("launcher-*.log")):
        try:
            with path.open(errors="replace") as f:
                found.update(parse(f, uids))
        except OSError:
            continue  # a log that went meanwhile (the lab coming down) has nothing for this run
    return found


def summary(costs: Iterable[LaunchCpu], launches: int, percentile: Callable[[list[float], float], float]) -> str:
    """One line: each process's CPU over the launches found, of ``launches`` in the run, at the P50 (and
    the whole launch's at the P95) of ``percentile``, the caller's own way of taking them."""
    found = list(costs)
    if not found:
        return f"launch CPU to Running: none of the {launches} launches found in the launchers' logs"

    def p50(values: Iterable[float]) -> float:
        return percentile(list(values), 50)

    totals = [c.total for c in found]
    return (f"launch CPU to Running, P50 of {len(found)} of {launches} launches (the launchers' logs): "
            f"launcher {p50(c.launcher for c in found):.3f} s, its subprocesses {p50(c.children for c in found):.3f}, "
            f"libvirtd {p50(c.libvirtd for c in found):.3f}, QEMU {p50(c.qemu for c in found):.3f}; "
            f"all {p50(totals):.3f} s, P95 {percentile(totals, 95):.3f} s (about 0.13 s on the 2-core box of the "
            "README's figures in a fast hour, 3-4x that in its slow ones)")
