"""BENCHMARK TOOLING: how much warm memory a lab's handlers hold (handler.warmmemory), read from their
logs, and a wait until their first refill has ended.

A lane on a lab just brought up would otherwise race its handlers' first refill: a node that has
been up a while when a burst comes (the case the reserve is for) has long finished it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Warm:
    size: int | None  # what the handler keeps at most (None: it has not said yet)
    held: int  # what it held after its last refill, as logged
    settled: bool  # it keeps none, or its first refill has ended
    refills: int = 0  # refills ended (after its first, each one after launches took some)


def warm_of(log: str) -> Warm:
    """What one handler's JSON log says of its warm memory (pure); lines that are not JSON are passed over."""
    size: int | None = None
    held, settled, refills = 0, False, 0
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "warm memory":
            size, held, refills = int(event.get("size", 0)), 0, 0  # a handler (re)started
            settled = size == 0
        elif event.get("event") == "warm memory refilled":
            held, settled, refills = int(event.get("held", 0)), True, refills + 1
        elif event.get("event") == "warm memory not refilled":
            settled = True
    return Warm(size, held, settled, refills)


def wait_settled(logs: list[Path], timeout: float, say: bool = True) -> list[Warm]:
    """Each handler's Warm once every one has settled, or at ``timeout`` seconds as they stand."""
    deadline, shown = time.monotonic() + timeout, -1.0
    while True:
        warm = [warm_of(p.read_text(errors="replace")) if p.exists() else Warm(None, 0, False) for p in logs]
        done = all(w.settled for w in warm)
        if done or time.monotonic() >= deadline:
            return warm
        if say and time.monotonic() - shown >= 5:
            shown = time.monotonic()
            sizes = [f"{p.stem} {'?' if w.size is None else w.size >> 20} MiB" for p, w in zip(logs, warm, strict=True)]
            print("waiting for the handlers' warm memory: " + ", ".join(sizes), flush=True)
        time.sleep(0.5)


def line(logs: list[Path], warm: list[Warm]) -> str:
    """The handlers' warm memory as the benches print it."""
    return "warm memory (handler.warmmemory): " + ", ".join(
        f"{p.stem.removeprefix('handler-')} {w.held >> 20} of {(w.size or 0) >> 20} MiB"
        for p, w in zip(logs, warm, strict=True))


def settled_line(state_dir: Path, timeout: float = 300) -> str:
    """Once every handler of the lab in ``state_dir`` has settled (at most ``timeout`` s), their line."""
    logs = sorted((state_dir / "logs").glob("handler-*.log"))
    return line(logs, wait_settled(logs, timeout))
