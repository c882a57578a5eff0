"""When each stage of a launch ended, logged once as the domain runs ("launch stages", seconds since
the launcher's process began), so a slow launch says which stage was slow."""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger()


class LaunchClock:
    def __init__(self, began: float | None) -> None:
        self.began = began if began is not None else time.time()
        self.marks: list[tuple[str, float]] = []

    def mark(self, stage: str) -> None:
        self.marks.append((stage, time.time()))

    def stages(self) -> dict[str, float]:
        """Each stage's end, in seconds since the process began, in the order they ended."""
        return {stage: round(at - self.began, 3) for stage, at in self.marks}

    def log(self) -> None:
        log.info("launch stages", **self.stages())
