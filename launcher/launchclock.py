"""When each stage of a launch ended, logged once as the domain runs ("launch stages", seconds since
the launcher's process began), so a slow launch says which stage was slow; and the launcher's own CPU
seconds by then ("launch cpu"), so a slow stage says whether it worked or waited."""

from __future__ import annotations

import os
import time

import structlog

log = structlog.get_logger()


class LaunchClock:
    def __init__(self, began: float | None) -> None:
        self.began = began if began is not None else time.time()
        self.marks: list[tuple[str, float, float]] = []

    def mark(self, stage: str) -> None:
        self.marks.append((stage, time.time(), time.process_time()))

    def stages(self) -> dict[str, float]:
        """Each stage's end, in seconds since the process began, in the order they ended."""
        return {stage: round(at - self.began, 3) for stage, at, _ in self.marks}

    def cpu(self) -> dict[str, float]:
        """The launcher's CPU seconds (all its threads, since its process began: a forked one starts
        at nothing) spent by each stage's end."""
        return {stage: round(used, 3) for stage, _, used in self.marks}

    def log(self, **others: float | None) -> None:
        """others: CPU seconds of the processes the launch started (libvirtd, QEMU) by now."""
        log.info("launch stages", **self.stages())
        spent = os.times()  # subprocesses it waited for (nft, qemu-img...) count as its children
        log.info("launch cpu", launcher=self.cpu(), children=round(spent.children_user + spent.children_system, 3),
                 **{name: round(s, 3) for name, s in others.items() if s is not None})
